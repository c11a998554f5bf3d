package kube

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// TestShippedManifestsDecodeStrictly decodes every Kubernetes object under
// infra/k8s with the API types, rejecting unknown or misspelt fields, so the staging
// manifests the chaos kubernetes driver acts on cannot rot unnoticed.
func TestShippedManifestsDecodeStrictly(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "..", "..", "infra", "k8s", "base")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	strict := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	kinds := map[string]int{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			obj, gvk, err := strict.Decode(js, nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if obj == nil || gvk == nil {
				t.Fatalf("%s document %d: nothing decoded", f, i)
			}
			kinds[gvk.Kind]++
		}
	}
	for _, k := range []string{"StatefulSet", "Deployment", "Service", "ConfigMap", "Role", "Job"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the manifests (%v)", k, kinds)
		}
	}
	if !strings.Contains(func() string { b, _ := os.ReadFile(filepath.Join(dir, "chaos.yaml")); return string(b) }(), `CHAOS_EXECUTE, value: "false"`) {
		t.Error("chaos must be deployed in dry-run")
	}
}
