package redisproc

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
)

// MasterDials lists every master address a Redis node tried to reach, from its log:
// Redis logs "Connecting to MASTER host:port" each time replication dials (once per
// REPLICAOF and about once a second while a master does not answer, so a parked
// replica logs its park address over and over). The count is per address.
func MasterDials(logPath string) (map[string]int, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, fmt.Errorf("reading the master dials of %s: %w", logPath, err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const marker = "Connecting to MASTER "
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, marker)
		if i < 0 {
			continue
		}
		addr := strings.TrimSpace(line[i+len(marker):])
		if j := strings.IndexByte(addr, ' '); j >= 0 {
			addr = addr[:j]
		}
		out[addr]++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the master dials of %s: %w", logPath, err)
	}
	return out, nil
}

// Dial is one address a node dialed, and how often.
type Dial struct {
	Node  string // the node's name
	Addr  string // host:port as Redis logged it
	Count int
}

func (d Dial) String() string { return fmt.Sprintf("%s dialed %s (%d times)", d.Node, d.Addr, d.Count) }

// OffLoopback reports whether a logged master address is outside 127.0.0.0/8 and ::1
// (a name, or anything unparsable, counts as outside: it could resolve anywhere).
func OffLoopback(addr string) bool {
	host := addr
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// AuditDials reads the logs of the given nodes and returns every master dial, and the
// subset that left loopback. A node whose log cannot be read is an error: an audit
// that skipped a node would prove nothing.
func AuditDials(nodes []*Process) (all, off []Dial, err error) {
	for _, n := range nodes {
		d, err := MasterDials(n.LogPath())
		if err != nil {
			return nil, nil, err
		}
		for addr, c := range d {
			x := Dial{Node: n.Name(), Addr: addr, Count: c}
			all = append(all, x)
			if OffLoopback(addr) {
				off = append(off, x)
			}
		}
	}
	less := func(s []Dial) func(i, j int) bool {
		return func(i, j int) bool {
			if s[i].Node != s[j].Node {
				return s[i].Node < s[j].Node
			}
			return s[i].Addr < s[j].Addr
		}
	}
	sort.Slice(all, less(all))
	sort.Slice(off, less(off))
	return all, off, nil
}
