package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrBackup: the RDB copy failed.
var ErrBackup = errors.New("backup failed")

// Backup is one RDB copy taken before a run touches a shard.
type Backup struct {
	Shard string    `json:"shard"`
	Node  string    `json:"node"`
	File  string    `json:"file"`
	Bytes int64     `json:"bytes"`
	Took  string    `json:"took"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

// BackupRDB copies node's dataset to file the way `redis-cli --rdb` does: it asks the
// node, as an RDB-only replica (REPLCONF capa eof, REPLCONF rdb-only 1, SYNC), for a
// snapshot and streams it to the file. Nothing is written into the node's own
// directory (a BGSAVE would leave a dump there that a restart of a node with
// persistence off would load), and it works for any node chaos can reach.
func BackupRDB(ctx context.Context, addr, file string, timeout time.Duration) (int64, error) {
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrBackup, addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReaderSize(conn, 64<<10)
	cmd := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := io.WriteString(conn, b.String()); err != nil {
			return "", err
		}
		if args[0] == "SYNC" {
			return "", nil
		}
		line, err := r.ReadString('\n')
		return strings.TrimSpace(line), err
	}
	if rep, err := cmd("REPLCONF", "capa", "eof"); err != nil || !strings.HasPrefix(rep, "+") {
		return 0, fmt.Errorf("%w: %s: REPLCONF capa eof: %q %v", ErrBackup, addr, rep, err)
	}
	if rep, err := cmd("REPLCONF", "rdb-only", "1"); err != nil {
		return 0, fmt.Errorf("%w: %s: REPLCONF rdb-only: %v", ErrBackup, addr, err)
	} else if !strings.HasPrefix(rep, "+") && !strings.Contains(rep, "Unrecognized") {
		return 0, fmt.Errorf("%w: %s: REPLCONF rdb-only: %q", ErrBackup, addr, rep)
	}
	if _, err := cmd("SYNC"); err != nil {
		return 0, fmt.Errorf("%w: %s: SYNC: %v", ErrBackup, addr, err)
	}
	// The node sends newlines as keep-alives while it prepares the snapshot.
	var header string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("%w: %s: waiting for the snapshot: %v", ErrBackup, addr, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			continue
		}
		if line[0] == '-' {
			return 0, fmt.Errorf("%w: %s: %s", ErrBackup, addr, line)
		}
		if line[0] != '$' {
			return 0, fmt.Errorf("%w: %s: unexpected reply %q", ErrBackup, addr, trunc(line))
		}
		header = line[1:]
		break
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return 0, err
	}
	tmp := file + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 256<<10)
	var n int64
	if strings.HasPrefix(header, "EOF:") {
		mark := []byte(header[4:])
		if len(mark) != 40 {
			f.Close()
			return 0, fmt.Errorf("%w: %s: bad EOF mark", ErrBackup, addr)
		}
		n, err = copyUntilMark(w, r, mark)
	} else {
		size, perr := strconv.ParseInt(header, 10, 64)
		if perr != nil || size < 0 {
			f.Close()
			return 0, fmt.Errorf("%w: %s: bad payload size %q", ErrBackup, addr, trunc(header))
		}
		n, err = io.CopyN(w, r, size)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("%w: %s: after %d bytes: %v", ErrBackup, addr, n, err)
	}
	if n < 9 {
		return n, fmt.Errorf("%w: %s: %d bytes is not an RDB file", ErrBackup, addr, n)
	}
	if err := os.Rename(tmp, file); err != nil {
		return n, err
	}
	return n, nil
}

// copyUntilMark copies r to w until the 40-byte mark that ends a diskless payload.
func copyUntilMark(w io.Writer, r io.Reader, mark []byte) (int64, error) {
	buf := make([]byte, 64<<10)
	var held []byte // the tail that could be the start of the mark
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			data := append(held, buf[:k]...)
			if i := bytes.Index(data, mark); i >= 0 {
				m, werr := w.Write(data[:i])
				return n + int64(m), werr
			}
			keep := len(mark)
			if len(data) < keep {
				keep = len(data)
			}
			out := data[:len(data)-keep]
			m, werr := w.Write(out)
			n += int64(m)
			if werr != nil {
				return n, werr
			}
			held = append([]byte(nil), data[len(data)-keep:]...)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
