//go:build !nok8s

package cli

import (
	"fmt"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/driver/kube"
)

func kubeDriver(c Config, log zerolog.Logger) (driver.Driver, error) {
	var rc *rest.Config
	var err error
	if c.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes configuration: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &kube.Driver{C: cs, Namespace: c.Namespace, Log: log}, nil
}
