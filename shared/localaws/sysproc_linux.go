package localaws

import "syscall"

// sysProcAttr puts the server in its own process group (Stop kills the group) and has
// the kernel kill it when the process that started it dies, so a crashed test leaves no
// server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
