package logging

import (
	"strings"
	"sync"
)

// Buffer collects output written from several goroutines (a logger's, a child
// process's) and reads it while it is still being written: for tests and tools that
// show a component's log when something went wrong.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
