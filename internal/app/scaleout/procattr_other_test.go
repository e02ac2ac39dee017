//go:build !linux

package scaleout

import "os/exec"

// setProcAttr does nothing where the parent-death signal is not available: the
// test's cleanups stop the servers.
func setProcAttr(*exec.Cmd) {}
