// The `template` request: a chart and its values, rendered as `helm template` renders them.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	ci "helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	chartloader "helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/ignore"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// helmRequest is `request.json` of the archive `lockstep-render template` reads.
type helmRequest struct {
	// Chart is the chart: a directory of the archive, or a .tgz file in it.
	Chart       string   `json:"chart"`
	ReleaseName string   `json:"releaseName"`
	Namespace   string   `json:"namespace"`
	KubeVersion string   `json:"kubeVersion,omitempty"`
	APIVersions []string `json:"apiVersions,omitempty"`
	IncludeCRDs bool     `json:"includeCRDs,omitempty"`
	SkipTests   bool     `json:"skipTests,omitempty"`
	IsUpgrade   bool     `json:"isUpgrade,omitempty"`
	// Values are merged in order, as `helm template -f a -f b --set ...` merges them.
	Values []helmValues `json:"values,omitempty"`
	// PostRenderers run in order over the rendered objects, hooks included.
	PostRenderers []json.RawMessage `json:"postRenderers,omitempty"`
}

// helmValues is one values source: a YAML document (a file of the archive), optionally merged
// at TargetPath (Flux's valuesFrom targetPath), or a `--set`-style expression.
type helmValues struct {
	// Name is how errors name the document (its file in the repository, a Secret).
	Name       string `json:"name,omitempty"`
	File       string `json:"file,omitempty"`
	TargetPath string `json:"targetPath,omitempty"`
	Set        string `json:"set,omitempty"`
	SetString  string `json:"setString,omitempty"`
	SetJSON    string `json:"setJSON,omitempty"`
	SetLiteral string `json:"setLiteral,omitempty"`
}

// helmObject is one rendered document, with the chart-relative template it came from.
type helmObject struct {
	Source   string `json:"source"`
	Manifest string `json:"manifest"`
}

type helmOutput struct {
	Objects []helmObject `json:"objects"`
}

// errUser is a mistake in the chart or its values, reported as Helm words it.
type errUser struct{ error }

func template(stdin io.Reader, stdout io.Writer) error {
	files, err := readArchive(stdin)
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	var req helmRequest
	if err := json.Unmarshal(files["request.json"], &req); err != nil {
		return fmt.Errorf("request.json: %w", err)
	}
	ch, err := loadChart(files, req.Chart)
	if err != nil {
		return errUser{err}
	}
	vals, err := mergeValues(files, req.Values)
	if err != nil {
		return errUser{err}
	}
	if err := installable(ch); err != nil {
		return errUser{err}
	}
	if deps := ch.Metadata.Dependencies; len(deps) > 0 {
		reqs := make([]ci.Dependency, len(deps))
		for i, d := range deps {
			reqs[i] = d
		}
		if err := action.CheckDependencies(ch, reqs); err != nil {
			return errUser{fmt.Errorf("chart dependencies: %w (vendor them in charts/ or list them in Chart.lock)", err)}
		}
	}
	client := action.NewInstall(&action.Configuration{})
	client.DryRunStrategy = action.DryRunClient
	client.Replace = true
	client.ReleaseName = req.ReleaseName
	client.Namespace = req.Namespace
	client.IncludeCRDs = req.IncludeCRDs
	client.IsUpgrade = req.IsUpgrade
	client.APIVersions = common.VersionSet(req.APIVersions)
	client.DisableOpenAPIValidation = true
	if req.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(req.KubeVersion)
		if err != nil {
			return errUser{fmt.Errorf("kubeVersion %q: %w", req.KubeVersion, err)}
		}
		client.KubeVersion = kv
	}
	if len(req.PostRenderers) > 0 {
		client.PostRenderer = kustomizePostRenderer{req.PostRenderers}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ri, err := client.RunWithContext(ctx, ch, vals)
	if err != nil {
		return errUser{err}
	}
	rel, ok := ri.(*release.Release)
	if !ok {
		return fmt.Errorf("unexpected release type %T", ri)
	}
	out := helmOutput{Objects: []helmObject{}}
	// The manifest, in Helm's install order, then the hooks: what `helm template` prints.
	manifests := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(manifests))
	for k := range manifests {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for _, k := range keys {
		source, body := splitSource(manifests[k])
		if strings.TrimSpace(body) == "" {
			continue
		}
		out.Objects = append(out.Objects, helmObject{Source: source, Manifest: body})
	}
	for _, h := range rel.Hooks {
		if req.SkipTests && slices.Contains(h.Events, release.HookTest) {
			continue
		}
		out.Objects = append(out.Objects, helmObject{Source: h.Path, Manifest: h.Manifest})
	}
	return json.NewEncoder(stdout).Encode(out)
}

// splitSource separates the `# Source: path` line Helm puts at the top of a document.
func splitSource(doc string) (string, string) {
	doc = strings.TrimLeft(doc, "\n")
	if rest, ok := strings.CutPrefix(doc, "# Source: "); ok {
		line, body, _ := strings.Cut(rest, "\n")
		return strings.TrimSpace(line), body
	}
	return "", doc
}

func installable(ch *chart.Chart) error {
	switch ch.Metadata.Type {
	case "", "application":
		return nil
	}
	return fmt.Errorf("%s charts are not installable", ch.Metadata.Type)
}

// loadChart loads the chart at dir of the archive (a directory, .helmignore applied as `helm`
// applies it to a chart directory) or the .tgz there.
func loadChart(files map[string][]byte, dir string) (*chart.Chart, error) {
	if data, ok := files[dir]; ok {
		return chartloader.LoadArchive(bytes.NewReader(data))
	}
	prefix := dir + "/"
	rules := ignore.Empty()
	if data, ok := files[prefix+ignore.HelmIgnore]; ok {
		r, err := ignore.Parse(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ignore.HelmIgnore, err)
		}
		rules = r
	}
	rules.AddDefaults()
	names := make([]string, 0)
	for name := range files {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var loaded []*archive.BufferedFile
	for _, name := range names {
		n := strings.TrimPrefix(name, prefix)
		if ignored(rules, n) {
			continue
		}
		data := bytes.TrimPrefix(files[name], []byte("\xEF\xBB\xBF"))
		loaded = append(loaded, &archive.BufferedFile{Name: n, ModTime: time.Unix(0, 0), Data: data})
	}
	if len(loaded) == 0 {
		return nil, fmt.Errorf("no chart at %s", dir)
	}
	return chartloader.LoadFiles(loaded)
}

// ignored applies .helmignore rules to a file and each directory above it, as a walk of the
// chart directory does.
func ignored(rules *ignore.Rules, name string) bool {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		if rules.Ignore(strings.Join(parts[:i], "/"), fakeInfo{name: parts[i-1], dir: true}) {
			return true
		}
	}
	return rules.Ignore(name, fakeInfo{name: parts[len(parts)-1]})
}

type fakeInfo struct {
	name string
	dir  bool
}

func (f fakeInfo) Name() string { return f.name }
func (f fakeInfo) Size() int64  { return 0 }
func (f fakeInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (f fakeInfo) ModTime() time.Time { return time.Unix(0, 0) }
func (f fakeInfo) IsDir() bool        { return f.dir }
func (f fakeInfo) Sys() any           { return nil }

// mergeValues merges the values sources in order, with Helm's own rules (`-f` files merged
// map by map, `--set` parsed by strvals).
func mergeValues(files map[string][]byte, sources []helmValues) (map[string]any, error) {
	base := map[string]any{}
	for i, v := range sources {
		name := v.Name
		if name == "" {
			name = v.File
		}
		switch {
		case v.File != "":
			data, ok := files[v.File]
			if !ok {
				return nil, fmt.Errorf("values %d: %s is missing from the request", i, v.File)
			}
			if v.TargetPath != "" {
				// Flux: the whole value, as a string, at targetPath.
				if err := strvals.ParseIntoString(v.TargetPath+"="+string(data), base); err != nil {
					return nil, fmt.Errorf("%s: targetPath %q: %w", name, v.TargetPath, err)
				}
				continue
			}
			current := map[string]any{}
			if err := yaml.Unmarshal(data, &current); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			base = chartloader.MergeMaps(base, current)
		case v.Set != "":
			if err := strvals.ParseInto(v.Set, base); err != nil {
				return nil, fmt.Errorf("set %q: %w", v.Set, err)
			}
		case v.SetString != "":
			if err := strvals.ParseIntoString(v.SetString, base); err != nil {
				return nil, fmt.Errorf("set-string: %w", err)
			}
		case v.SetJSON != "":
			if err := strvals.ParseJSON(v.SetJSON, base); err != nil {
				return nil, fmt.Errorf("set-json: %w", err)
			}
		case v.SetLiteral != "":
			if err := strvals.ParseLiteralInto(v.SetLiteral, base); err != nil {
				return nil, fmt.Errorf("set-literal: %w", err)
			}
		}
	}
	return base, nil
}

// kustomizePostRenderer runs Flux's HelmRelease `postRenderers[].kustomize` (patches, images)
// over the rendered objects with kustomize's engine, in memory, as helm-controller does.
type kustomizePostRenderer struct {
	steps []json.RawMessage
}

func (k kustomizePostRenderer) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	current := in.Bytes()
	for i, step := range k.steps {
		var spec types.Kustomization
		if err := json.Unmarshal(step, &spec); err != nil {
			return nil, fmt.Errorf("postRenderers[%d].kustomize: %w", i, err)
		}
		spec.APIVersion, spec.Kind = types.KustomizationVersion, types.KustomizationKind
		spec.Resources = []string{"helm-output.yaml"}
		fs := filesys.MakeFsInMemory()
		if err := fs.WriteFile("/helm-output.yaml", current); err != nil {
			return nil, err
		}
		text, err := yaml.Marshal(spec)
		if err != nil {
			return nil, err
		}
		if err := fs.WriteFile("/kustomization.yaml", text); err != nil {
			return nil, err
		}
		kz := krusty.MakeKustomizer(&krusty.Options{
			Reorder:          krusty.ReorderOptionNone,
			LoadRestrictions: types.LoadRestrictionsRootOnly,
			PluginConfig:     types.DisabledPluginConfig(),
		})
		m, err := kz.Run(fs, "/")
		if err != nil {
			return nil, fmt.Errorf("postRenderers[%d].kustomize: %w", i, err)
		}
		if current, err = m.AsYaml(); err != nil {
			return nil, err
		}
	}
	return bytes.NewBuffer(current), nil
}

// readArchive reads every regular file of a tar.
func readArchive(r io.Reader) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<16))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			files[strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = data
		default:
			return nil, fmt.Errorf("%s: not a regular file", h.Name)
		}
	}
}
