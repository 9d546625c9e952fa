// lockstep-kustomize: kustomize's own engine (sigs.k8s.io/kustomize/api), as a helper process of
// the Lockstep agent and CLI.
//
//	lockstep-kustomize build DIR [--origins] < files.tar > objects.yaml
//	lockstep-kustomize version
//
// The repository's files (SOPS files still encrypted) come as a tar on stdin and are built over
// kustomize's in-memory filesystem: nothing is read from or written to disk, and nothing is
// fetched. Remote bases, helmCharts and non-builtin plugins are refused by the caller before
// the build; the caller also starts this process with an empty environment, so that neither
// git nor a network proxy can be found should kustomize try. Plugins are limited to the
// builtins. With --origins, each object carries `config.kubernetes.io/origin` (originAnnotations
// is added to the top kustomization's buildMetadata), which the caller reads and removes; origin
// tracking slows kustomize by a third, so the agent builds without it.
//
// Exit status: 0 with the objects as a YAML stream on stdout; 1 with kustomize's error on
// stderr; 2 for a malformed request; 3 if kustomize panicked.
package main

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime/debug"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	if len(args) == 1 && args[0] == "version" {
		fmt.Fprintf(stdout, "lockstep-kustomize sigs.k8s.io/kustomize/api %s\n", moduleVersion("sigs.k8s.io/kustomize/api"))
		return 0
	}
	origins := len(args) == 3 && args[2] == "--origins"
	if (len(args) != 2 && !origins) || args[0] != "build" {
		fmt.Fprintln(stderr, "usage: lockstep-kustomize build DIR [--origins] < files.tar")
		return 2
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "kustomize panicked: %v\n", r)
			code = 3
		}
	}()
	fs := filesys.MakeFsInMemory()
	if err := untar(stdin, fs); err != nil {
		fmt.Fprintf(stderr, "reading the files: %v\n", err)
		return 2
	}
	dir := path.Join("/", args[1])
	if origins {
		if err := addOriginAnnotations(fs, dir); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	k := krusty.MakeKustomizer(&krusty.Options{
		Reorder:          krusty.ReorderOptionNone,
		LoadRestrictions: types.LoadRestrictionsNone,
		PluginConfig:     types.DisabledPluginConfig(),
	})
	m, err := k.Run(fs, dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out, err := m.AsYaml()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintf(stderr, "writing the objects: %v\n", err)
		return 2
	}
	return 0
}

// untar writes every regular file of the archive into fs, rooted at "/".
func untar(r io.Reader, fs filesys.FileSystem) error {
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<16))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Join("/", h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := fs.MkdirAll(name); err != nil {
				return err
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if err := fs.MkdirAll(path.Dir(name)); err != nil {
				return err
			}
			if err := fs.WriteFile(name, data); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: not a regular file", h.Name)
		}
	}
}

// addOriginAnnotations makes kustomize record each object's origin: `originAnnotations` in the
// buildMetadata of the kustomization at dir (the only one whose buildMetadata is read).
func addOriginAnnotations(fs filesys.FileSystem, dir string) error {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		file := path.Join(dir, name)
		if !fs.Exists(file) {
			continue
		}
		data, err := fs.ReadFile(file)
		if err != nil {
			return err
		}
		node, err := yaml.Parse(string(data))
		if err != nil {
			// kustomize reports it in its own words.
			return nil
		}
		list, err := node.Pipe(yaml.LookupCreate(yaml.SequenceNode, "buildMetadata"))
		if err != nil || list == nil {
			return nil
		}
		values, err := list.ElementValues("")
		if err == nil {
			for _, v := range values {
				if v == types.OriginAnnotations {
					return nil
				}
			}
		}
		if err := list.PipeE(yaml.Append(yaml.NewScalarRNode(types.OriginAnnotations).YNode())); err != nil {
			return nil
		}
		text, err := node.String()
		if err != nil {
			return err
		}
		return fs.WriteFile(file, []byte(text))
	}
	return nil
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
