package dynamokv_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/dynamokv"
	"github.com/heartline/heartline/shared/kv/kvtest"
	"github.com/heartline/heartline/shared/localaws"
)

var tables atomic.Int64

func open(t *testing.T, c dynamokv.Client) *dynamokv.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := dynamokv.Open(ctx, dynamokv.Options{Client: c, Table: fmt.Sprintf("kvtest-%d", tables.Add(1)), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the kv suite against dynalite, a fresh table per test.
func TestConformance(t *testing.T) {
	srv := localaws.Dynamo(t)
	c := localaws.DynamoClient(srv.Endpoint())
	kvtest.Run(t, func(t *testing.T) kv.Store { return open(t, c) })
}

func TestRecreatedKeyContinuesAboveOldRevisions(t *testing.T) {
	srv := localaws.Dynamo(t)
	s := open(t, localaws.DynamoClient(srv.Endpoint()))
	ctx := context.Background()
	r1, err := s.Create(ctx, "lease.x", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "lease.x", r1); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Create(ctx, "lease.x", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	if r2 <= r1 {
		t.Fatalf("re-created key got revision %d, not above the deleted one's %d", r2, r1)
	}
	// A stale holder of r1 cannot write over the new incarnation.
	if _, err := s.Update(ctx, "lease.x", []byte("stale"), r1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale Update: want ErrConflict, got %v", err)
	}
	if ents, err := s.List(ctx, "lease"); err != nil || len(ents) != 1 {
		t.Fatalf("List after re-create: %v %v", ents, err)
	}
	if err := s.Delete(ctx, "lease.x", 0); err != nil {
		t.Fatal(err)
	}
	if ents, err := s.List(ctx, ""); err != nil || len(ents) != 0 {
		t.Fatalf("a tombstone was listed: %v %v", ents, err)
	}
}

func TestListPaginates(t *testing.T) {
	srv := localaws.Dynamo(t)
	s := open(t, localaws.DynamoClient(srv.Endpoint()))
	ctx := context.Background()
	big := make([]byte, 300<<10) // 4 items exceed a 1 MB query page
	for i := 0; i < 8; i++ {
		if _, err := s.Put(ctx, fmt.Sprintf("blob.b%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"blob", ""} {
		ents, err := s.List(ctx, p)
		if err != nil || len(ents) != 8 {
			t.Fatalf("List(%q): %d entries, %v", p, len(ents), err)
		}
	}
}

func TestOpenRefusesMissingOrForeignTable(t *testing.T) {
	srv := localaws.Dynamo(t)
	c := localaws.DynamoClient(srv.Endpoint())
	ctx := context.Background()
	if _, err := dynamokv.Open(ctx, dynamokv.Options{Client: c, Table: "absent"}); !errors.Is(err, dynamokv.ErrTable) {
		t.Fatalf("missing table without Create: want ErrTable, got %v", err)
	}
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String("foreign"), BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dynamokv.Open(ctx, dynamokv.Options{Client: c, Table: "foreign", Create: true}); !errors.Is(err, dynamokv.ErrTable) {
		t.Fatalf("table with another key schema: want ErrTable, got %v", err)
	}
}
