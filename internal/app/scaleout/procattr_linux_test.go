package scaleout

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a server process if the test binary dies
// without cleaning up (a panic or a -timeout), so no server outlives the test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
