//go:build !nodocker

package cli

import (
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/driver/docker"
)

func dockerDriver(c Config, log zerolog.Logger) (driver.Driver, error) {
	return docker.New(c.DockerHost, c.ComposeProject, log)
}
