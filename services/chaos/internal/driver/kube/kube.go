// Package kube is the staging driver: process faults on Kubernetes become pod
// deletions (k8s.io/client-go), and the pod's controller (a StatefulSet, a Deployment)
// brings a replacement, as it would after a node failure. kill deletes with no grace
// period; terminate deletes with the pod's grace period; restart is a deletion too.
// Pausing a pod, wiping its data or overriding its configuration are not supported.
//
// Mapping: a Redis node is the pod whose annotation "heartline.io/node" equals the
// node's address, else the pod named like the first DNS label of the address's host
// (StatefulSet pods: redis-s1-0.redis-s1.ns.svc), else the pod with that IP. A service
// instance "ratequeue:instance:2" is the second pod, by name, labelled
// app.kubernetes.io/name=ratequeue.
package kube

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

var _ driver.Driver = (*Driver)(nil)

// Names used to find pods.
const (
	AnnotationNode = "heartline.io/node"
	LabelName      = "app.kubernetes.io/name"
)

// Driver deletes pods in one namespace.
type Driver struct {
	C         kubernetes.Interface
	Namespace string
	Log       zerolog.Logger
}

// Name is "kubernetes".
func (d *Driver) Name() string { return "kubernetes" }

// NeedsExecute is true: deleting pods needs --execute.
func (d *Driver) NeedsExecute() bool { return true }

func (d *Driver) pod(ctx context.Context, t target.Target) (corev1.Pod, error) {
	switch t.Kind {
	case target.Node:
		pods, err := d.C.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return corev1.Pod{}, fmt.Errorf("listing pods in %s: %w", d.Namespace, err)
		}
		host, _, _ := net.SplitHostPort(t.Addr)
		first, _, _ := strings.Cut(host, ".")
		for _, p := range pods.Items {
			if p.Annotations[AnnotationNode] == t.Addr {
				return p, nil
			}
		}
		for _, p := range pods.Items {
			if p.Name == first || (host != "" && p.Status.PodIP == host) {
				return p, nil
			}
		}
	case target.Service:
		pods, err := d.servicePods(ctx, t.Service)
		if err != nil {
			return corev1.Pod{}, err
		}
		if t.Instance >= 1 && t.Instance <= len(pods) {
			return pods[t.Instance-1], nil
		}
	}
	return corev1.Pod{}, fmt.Errorf("%w: no pod in namespace %q for %s", driver.ErrUnknownTarget, d.Namespace, t)
}

func (d *Driver) servicePods(ctx context.Context, service string) ([]corev1.Pod, error) {
	pods, err := d.C.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelName + "=" + service})
	if err != nil {
		return nil, fmt.Errorf("listing %s pods in %s: %w", service, d.Namespace, err)
	}
	out := pods.Items
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *Driver) delete(ctx context.Context, t target.Target, grace *int64) error {
	p, err := d.pod(ctx, t)
	if err != nil {
		return err
	}
	if err := d.C.CoreV1().Pods(d.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace}); err != nil {
		return fmt.Errorf("deleting pod %s/%s: %w", d.Namespace, p.Name, err)
	}
	d.Log.Warn().Str("pod", p.Name).Str("target", t.String()).Msg("pod deleted; its controller replaces it")
	return nil
}

// Kill deletes the pod with no grace period (graceful: with its own grace period).
func (d *Driver) Kill(ctx context.Context, t target.Target, o driver.KillOptions) error {
	if o.Graceful {
		return d.delete(ctx, t, nil)
	}
	zero := int64(0)
	return d.delete(ctx, t, &zero)
}

// Pause is not supported on Kubernetes.
func (d *Driver) Pause(context.Context, target.Target) error {
	return fmt.Errorf("pausing a pod: %w", driver.ErrUnsupported)
}

// Resume is not supported on Kubernetes.
func (d *Driver) Resume(context.Context, target.Target) error {
	return fmt.Errorf("resuming a pod: %w", driver.ErrUnsupported)
}

// Restart deletes the pod (its controller starts a new one); wipe, config overrides
// and delays are not supported.
func (d *Driver) Restart(ctx context.Context, t target.Target, o driver.RestartOptions) error {
	if o.Wipe || o.Config != nil || o.Delay > 0 {
		return fmt.Errorf("a pod restart with wipe, a config override or a delay: %w", driver.ErrUnsupported)
	}
	if o.Graceful {
		return d.delete(ctx, t, nil)
	}
	zero := int64(0)
	return d.delete(ctx, t, &zero)
}

// RestoreConfig is not supported.
func (d *Driver) RestoreConfig(context.Context, target.Target) ([][2]string, error) {
	return nil, fmt.Errorf("pod config override: %w", driver.ErrUnsupported)
}

// EnsureRunning does nothing: the controller replaces deleted pods.
func (d *Driver) EnsureRunning(context.Context, target.Target) error { return nil }

// Instances lists a service's pods as instances 1..n by pod name.
func (d *Driver) Instances(ctx context.Context, service string) ([]target.Target, error) {
	pods, err := d.servicePods(ctx, service)
	if err != nil {
		return nil, err
	}
	out := make([]target.Target, len(pods))
	for i := range pods {
		out[i] = target.Target{Kind: target.Service, Service: service, Instance: i + 1}
	}
	return out, nil
}
