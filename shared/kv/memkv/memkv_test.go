package memkv_test

import (
	"testing"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/kvtest"
	"github.com/heartline/heartline/shared/kv/memkv"
)

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return memkv.New() })
}
