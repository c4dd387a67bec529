// Command kubecheck decodes Kubernetes manifests strictly, the way the API
// server's strict field validation does: with client-go's scheme (every
// built-in kind) plus the Prometheus Operator's monitoring.coreos.com/v1
// kinds, refusing unknown fields, duplicate fields, unknown kinds and values
// of the wrong type. deploy/deploy_test.go runs it on `helm template` output
// and on the kustomize build of deploy/kubernetes.
//
//	kubecheck FILE...            # '-' reads standard input
//	kubecheck -kustomize DIR     # kustomize build DIR, then check the result
//	kubecheck -kustomize DIR -o  # also print the built manifests
//
// It prints one line per object (kind namespace/name) and exits 1 listing
// every document that does not decode.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubecheck:", err)
		os.Exit(1)
	}
}

func run() error {
	kustomizeDir := flag.String("kustomize", "", "build this kustomization and check the result")
	printOut := flag.Bool("o", false, "with -kustomize: print the built manifests on standard output")
	flag.Parse()

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	type input struct {
		name string
		data []byte
	}
	var inputs []input
	if *kustomizeDir != "" {
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), *kustomizeDir)
		if err != nil {
			return fmt.Errorf("kustomize build %s: %w", *kustomizeDir, err)
		}
		y, err := m.AsYaml()
		if err != nil {
			return fmt.Errorf("kustomize build %s: %w", *kustomizeDir, err)
		}
		if *printOut {
			os.Stdout.Write(y)
		}
		inputs = append(inputs, input{"kustomize build " + *kustomizeDir, y})
	}
	for _, f := range flag.Args() {
		var b []byte
		var err error
		if f == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return err
		}
		inputs = append(inputs, input{f, b})
	}
	if len(inputs) == 0 {
		return errors.New("nothing to check: name files ('-' for standard input) or -kustomize DIR")
	}

	var problems []string
	objects := 0
	for _, in := range inputs {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in.data)))
		for doc := 1; ; doc++ {
			b, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: document %d: %v", in.name, doc, err))
				break
			}
			if isEmpty(b) {
				continue
			}
			obj, gvk, err := dec.Decode(b, nil, nil)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: document %d (%s): %v", in.name, doc, firstLines(b), err))
				continue
			}
			objects++
			name := "?"
			if acc, err := meta.Accessor(obj); err == nil {
				name = acc.GetName()
				if ns := acc.GetNamespace(); ns != "" {
					name = ns + "/" + name
				}
			}
			if !*printOut {
				fmt.Printf("ok %s %s\n", gvk.Kind, name)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d of %d documents do not decode strictly:\n  %s", len(problems), objects+len(problems), strings.Join(problems, "\n  "))
	}
	if objects == 0 {
		return errors.New("no Kubernetes object found")
	}
	return nil
}

// isEmpty reports whether a YAML document holds only comments and blanks.
func isEmpty(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

// firstLines names a document in an error: its source comment (helm) and kind.
func firstLines(b []byte) string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "# Source:") || strings.HasPrefix(l, "kind:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}
