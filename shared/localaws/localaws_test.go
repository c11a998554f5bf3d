package localaws_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/heartline/heartline/shared/localaws"
)

func TestKinesaliteAnswers(t *testing.T) {
	s := localaws.Kinesis(t)
	if !strings.HasPrefix(s.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("endpoint %q: want loopback", s.Endpoint())
	}
	c := localaws.KinesisClient(s.Endpoint())
	if _, err := c.ListStreams(context.Background(), &kinesis.ListStreamsInput{}); err != nil {
		t.Fatalf("ListStreams: %v", err)
	}
}

func TestDynaliteAnswersAndStops(t *testing.T) {
	s := localaws.Dynamo(t)
	c := localaws.DynamoClient(s.Endpoint())
	if _, err := c.ListTables(context.Background(), &dynamodb.ListTablesInput{}); err != nil {
		t.Fatalf("ListTables: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Stop returned before the process exited")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestMissingInstallIsAClearError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "serve.js"), []byte("//"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := localaws.StartKinesis(context.Background(), localaws.Options{Dir: dir})
	if !errors.Is(err, localaws.ErrNotInstalled) && !errors.Is(err, localaws.ErrNodeMissing) {
		t.Fatalf("want ErrNotInstalled, got %v", err)
	}
	if !strings.Contains(err.Error(), "npm ci") {
		t.Fatalf("the error does not name the fix: %v", err)
	}
}
