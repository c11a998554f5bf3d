//go:build nok8s

package cli

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
)

func kubeDriver(Config, zerolog.Logger) (driver.Driver, error) {
	return nil, fmt.Errorf("%w: this chaos binary was built with -tags nok8s", driver.ErrUnsupported)
}
