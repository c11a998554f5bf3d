package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

func pod(name string, labels, ann map[string]string, ip string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "staging", Labels: labels, Annotations: ann},
		Status: corev1.PodStatus{PodIP: ip}}
}

func TestDeletesThePodBehindEachTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := fake.NewSimpleClientset(
		pod("redis-s1-0", map[string]string{LabelName: "redis"}, nil, "10.1.0.5"),
		pod("redis-s1-1", map[string]string{LabelName: "redis"}, map[string]string{AnnotationNode: "redis-b.internal:6379"}, "10.1.0.6"),
		pod("redis-s2-0", map[string]string{LabelName: "redis"}, nil, "10.1.0.7"),
		pod("ratequeue-7d9f-aaaa", map[string]string{LabelName: "ratequeue"}, nil, "10.1.0.8"),
		pod("ratequeue-7d9f-bbbb", map[string]string{LabelName: "ratequeue"}, nil, "10.1.0.9"),
		pod("other-ns-pod", nil, nil, ""),
	)
	var graces []string
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		da := a.(k8stesting.DeleteActionImpl)
		g := "default"
		if gp := da.DeleteOptions.GracePeriodSeconds; gp != nil {
			g = "0"
			if *gp != 0 {
				g = "other"
			}
		}
		graces = append(graces, da.Name+":"+g)
		return false, nil, nil
	})
	d := &Driver{C: cs, Namespace: "staging", Log: zerolog.Nop()}
	if !d.NeedsExecute() {
		t.Fatal("the kubernetes driver must need --execute")
	}
	cases := []struct {
		t     target.Target
		o     driver.KillOptions
		wants string
	}{
		{target.Target{Kind: target.Node, Addr: "redis-s1-0.redis-s1.staging.svc:6379"}, driver.KillOptions{}, "redis-s1-0:0"},
		{target.Target{Kind: target.Node, Addr: "redis-b.internal:6379"}, driver.KillOptions{Graceful: true}, "redis-s1-1:default"},
		{target.Target{Kind: target.Node, Addr: "10.1.0.7:6379"}, driver.KillOptions{}, "redis-s2-0:0"},
		{target.Target{Kind: target.Service, Service: "ratequeue", Instance: 2}, driver.KillOptions{}, "ratequeue-7d9f-bbbb:0"},
	}
	for _, c := range cases {
		graces = nil
		if err := d.Kill(ctx, c.t, c.o); err != nil {
			t.Fatalf("%s: %v", c.t, err)
		}
		if len(graces) != 1 || graces[0] != c.wants {
			t.Fatalf("%s: deletes %v, want %s", c.t, graces, c.wants)
		}
		if _, err := cs.CoreV1().Pods("staging").Get(ctx, graces[0][:len(graces[0])-len(":0")], metav1.GetOptions{}); err == nil && c.o.Graceful == false {
			t.Fatalf("%s: pod still exists", c.t)
		}
	}
	// Unsupported faults touch nothing.
	graces = nil
	rq := target.Target{Kind: target.Service, Service: "ratequeue", Instance: 1}
	if err := d.Pause(ctx, rq); !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("pause: %v", err)
	}
	if err := d.Restart(ctx, rq, driver.RestartOptions{Wipe: true}); !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("restart wipe: %v", err)
	}
	if err := d.Kill(ctx, target.Target{Kind: target.Node, Addr: "nope:6379"}, driver.KillOptions{}); !errors.Is(err, driver.ErrUnknownTarget) {
		t.Fatalf("unknown pod: %v", err)
	}
	if len(graces) != 0 {
		t.Fatalf("refused operations deleted pods: %v", graces)
	}
	if err := d.Restart(ctx, rq, driver.RestartOptions{}); err != nil || len(graces) != 1 || graces[0] != "ratequeue-7d9f-aaaa:0" {
		t.Fatalf("restart = delete: %v %v", graces, err)
	}
	inst, err := d.Instances(ctx, "redis")
	if err != nil || len(inst) != 0 && inst[0].Service != "redis" {
		t.Fatalf("instances: %v %v", inst, err)
	}
}
