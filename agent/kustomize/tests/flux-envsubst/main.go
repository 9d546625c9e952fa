// flux-envsubst: the test oracle of Lockstep's postBuild substitution. It does what Flux's
// kustomize-controller v1.9.6 does to one object (fluxcd/pkg/kustomize v1.35.7
// varSubstitution): the object as YAML (kustomize's Resource.AsYAML, sigs.k8s.io/yaml
// JSONToYAML), fluxcd/pkg/envsubst over the text, and the text back to JSON (YAMLToJSON).
//
// stdin: one JSON object per line, {"object": {...}, "vars": {"name": "value"}, "strict": true};
// stdout: one line each, {"object": {...}} or {"error": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/envsubst"
	"sigs.k8s.io/yaml"
)

type request struct {
	Object json.RawMessage   `json:"object"`
	Vars   map[string]string `json:"vars"`
	Strict bool              `json:"strict"`
}

type response struct {
	Object json.RawMessage `json:"object,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func substitute(req request) ([]byte, error) {
	text, err := yaml.JSONToYAML(req.Object)
	if err != nil {
		return nil, err
	}
	out, err := envsubst.Eval(string(text), func(s string) (string, bool) {
		if req.Strict {
			v, ok := req.Vars[s]
			return v, ok
		}
		return req.Vars[s], true
	})
	if err != nil {
		return nil, fmt.Errorf("variable substitution failed: %w", err)
	}
	return yaml.YAMLToJSON([]byte(out))
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else if out, err := substitute(req); err != nil {
			resp.Error = err.Error()
		} else {
			resp.Object = out
		}
		if err := enc.Encode(resp); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
