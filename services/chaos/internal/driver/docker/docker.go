// Package docker is the chaos driver for a docker compose deployment: it finds the
// container behind a target by its compose labels and kills, pauses, unpauses,
// restarts or starts it through the Docker Engine API (github.com/moby/moby/client).
//
// Mapping: a Redis node is the container of the compose project whose label
// "heartline.node" equals the node's address, else whose compose service name (or
// container name) is the address's host part (compose service names are host names on
// the project network). A service instance "ratequeue:instance:2" is the container
// with com.docker.compose.service=ratequeue and com.docker.compose.container-number=2.
package docker

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

var _ driver.Driver = (*Driver)(nil)

// Labels used to find containers.
const (
	LabelProject = "com.docker.compose.project"
	LabelService = "com.docker.compose.service"
	LabelNumber  = "com.docker.compose.container-number"
	LabelNode    = "heartline.node"
)

// Driver acts on containers of one compose project.
type Driver struct {
	C *client.Client
	// Project is the compose project name ("" matches containers of any project).
	Project string
	// StopTimeout is the grace period of a graceful stop (default 10 s).
	StopTimeout time.Duration
	Log         zerolog.Logger
}

// New connects to the Docker Engine at host ("" uses DOCKER_HOST and the defaults).
func New(host, project string, log zerolog.Logger) (*Driver, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Driver{C: c, Project: project, Log: log}, nil
}

// Name is "docker".
func (d *Driver) Name() string { return "docker" }

// NeedsExecute is true: acting on containers needs --execute.
func (d *Driver) NeedsExecute() bool { return true }

func (d *Driver) list(ctx context.Context, extra ...string) ([]containerInfo, error) {
	f := client.Filters{}
	if d.Project != "" {
		f = f.Add("label", LabelProject+"="+d.Project)
	}
	for _, e := range extra {
		f = f.Add("label", e)
	}
	res, err := d.C.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	var out []containerInfo
	for _, c := range res.Items {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, containerInfo{id: c.ID, name: name, labels: c.Labels, state: string(c.State)})
	}
	return out, nil
}

type containerInfo struct {
	id, name, state string
	labels          map[string]string
}

// container finds the container of t.
func (d *Driver) container(ctx context.Context, t target.Target) (containerInfo, error) {
	switch t.Kind {
	case target.Node:
		all, err := d.list(ctx)
		if err != nil {
			return containerInfo{}, err
		}
		host, _, _ := net.SplitHostPort(t.Addr)
		for _, c := range all {
			if c.labels[LabelNode] == t.Addr {
				return c, nil
			}
		}
		for _, c := range all {
			if host != "" && (c.labels[LabelService] == host || c.name == host) {
				return c, nil
			}
		}
	case target.Service:
		all, err := d.list(ctx, LabelService+"="+t.Service)
		if err != nil {
			return containerInfo{}, err
		}
		for _, c := range all {
			if c.labels[LabelNumber] == strconv.Itoa(t.Instance) {
				return c, nil
			}
		}
	}
	return containerInfo{}, fmt.Errorf("%w: no container of project %q for %s", driver.ErrUnknownTarget, d.Project, t)
}

// Kill sends SIGKILL (SIGTERM when graceful) to the container. Its restart policy,
// not chaos, decides when it comes back.
func (d *Driver) Kill(ctx context.Context, t target.Target, o driver.KillOptions) error {
	c, err := d.container(ctx, t)
	if err != nil {
		return err
	}
	sig := "SIGKILL"
	if o.Graceful {
		sig = "SIGTERM"
	}
	if _, err := d.C.ContainerKill(ctx, c.id, client.ContainerKillOptions{Signal: sig}); err != nil {
		return fmt.Errorf("docker kill -s %s %s: %w", sig, c.name, err)
	}
	return nil
}

// Pause freezes the container (docker pause).
func (d *Driver) Pause(ctx context.Context, t target.Target) error {
	c, err := d.container(ctx, t)
	if err != nil {
		return err
	}
	if _, err := d.C.ContainerPause(ctx, c.id, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("docker pause %s: %w", c.name, err)
	}
	return nil
}

// Resume unpauses the container.
func (d *Driver) Resume(ctx context.Context, t target.Target) error {
	c, err := d.container(ctx, t)
	if err != nil {
		return err
	}
	if _, err := d.C.ContainerUnpause(ctx, c.id, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("docker unpause %s: %w", c.name, err)
	}
	return nil
}

// Restart stops the container (SIGKILL at once, or SIGTERM with the stop timeout),
// waits the delay and starts it. Wiping data or overriding config is not supported.
func (d *Driver) Restart(ctx context.Context, t target.Target, o driver.RestartOptions) error {
	if o.Wipe || o.Config != nil {
		return fmt.Errorf("docker restart with wipe or a config override: %w", driver.ErrUnsupported)
	}
	c, err := d.container(ctx, t)
	if err != nil {
		return err
	}
	timeout := 0
	if o.Graceful {
		timeout = int(d.stopTimeout().Seconds())
	}
	if _, err := d.C.ContainerStop(ctx, c.id, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		return fmt.Errorf("docker stop %s: %w", c.name, err)
	}
	if o.Delay > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("docker restart %s: %w (it stays stopped until recovery)", c.name, ctx.Err())
		case <-time.After(o.Delay):
		}
	}
	if _, err := d.C.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("docker start %s: %w", c.name, err)
	}
	return nil
}

func (d *Driver) stopTimeout() time.Duration {
	if d.StopTimeout > 0 {
		return d.StopTimeout
	}
	return 10 * time.Second
}

// RestoreConfig is not supported: containers get their config from the image/compose.
func (d *Driver) RestoreConfig(context.Context, target.Target) ([][2]string, error) {
	return nil, fmt.Errorf("docker: config override: %w", driver.ErrUnsupported)
}

// EnsureRunning unpauses a paused container and starts a stopped one.
func (d *Driver) EnsureRunning(ctx context.Context, t target.Target) error {
	c, err := d.container(ctx, t)
	if err != nil {
		return err
	}
	res, err := d.C.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("docker inspect %s: %w", c.name, err)
	}
	st := res.Container.State
	if st == nil {
		return fmt.Errorf("docker inspect %s: no state", c.name)
	}
	if st.Paused {
		if _, err := d.C.ContainerUnpause(ctx, c.id, client.ContainerUnpauseOptions{}); err != nil {
			return fmt.Errorf("docker unpause %s: %w", c.name, err)
		}
		return nil
	}
	if !st.Running && !st.Restarting {
		if _, err := d.C.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
			return fmt.Errorf("docker start %s: %w", c.name, err)
		}
	}
	return nil
}

// Instances lists a compose service's containers by container number.
func (d *Driver) Instances(ctx context.Context, service string) ([]target.Target, error) {
	all, err := d.list(ctx, LabelService+"="+service)
	if err != nil {
		return nil, err
	}
	var out []target.Target
	for _, c := range all {
		n, err := strconv.Atoi(c.labels[LabelNumber])
		if err != nil || n < 1 {
			continue
		}
		out = append(out, target.Target{Kind: target.Service, Service: service, Instance: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}
