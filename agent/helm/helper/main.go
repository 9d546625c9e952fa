// lockstep-helm: Helm's own engine (helm.sh/helm/v4), as a helper process of the Lockstep agent
// and CLI, rendering a chart client-side as `helm template` does.
//
//	lockstep-helm template < request.tar > objects.json
//	lockstep-helm version
//
// The request comes as a tar on stdin: `request.json` (release name, namespace, Capabilities,
// the values sources in order, post-renderers), the chart (a directory of the archive, its
// dependencies vendored under `charts/`, or a packaged .tgz) and the values documents (SOPS
// values already decrypted by the caller: plaintext only ever on this pipe). Nothing is read
// from disk or the network: there is no release state (the install is a client-only dry run),
// `lookup` returns nothing, as under `helm template`, and the caller starts this process with
// an empty environment. Post-renderers are kustomize builds (sigs.k8s.io/kustomize/api) over
// kustomize's in-memory filesystem, as Flux's helm-controller runs them.
//
// The output is one JSON object: {"objects": [{"source": "web/templates/x.yaml", "manifest":
// "..."}]}, the manifest in Helm's install order and then the hooks, as `helm template` prints
// them (tests left out with skipTests).
//
// Exit status: 0 with the objects on stdout; 1 with Helm's error on stderr (the chart or the
// values); 2 for a malformed request; 3 if Helm panicked.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	if len(args) == 1 && args[0] == "version" {
		fmt.Fprintf(stdout, "lockstep-helm helm.sh/helm/v4 %s sigs.k8s.io/kustomize/api %s\n",
			moduleVersion("helm.sh/helm/v4"), moduleVersion("sigs.k8s.io/kustomize/api"))
		return 0
	}
	if len(args) != 1 || args[0] != "template" {
		fmt.Fprintln(stderr, "usage: lockstep-helm template < request.tar")
		return 2
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "helm panicked: %v\n", r)
			code = 3
		}
	}()
	if err := template(stdin, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		var u errUser
		if errors.As(err, &u) {
			return 1
		}
		return 2
	}
	return 0
}

func moduleVersion(module string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == module {
				return d.Version
			}
		}
	}
	return "unknown"
}
