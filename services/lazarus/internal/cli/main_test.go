package cli

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...interface{}) {}

func TestMain(m *testing.M) {
	// go-redis logs every refused dial; the tests refuse many on purpose.
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}
