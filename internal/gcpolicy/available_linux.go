package gcpolicy

import (
	"fmt"
	"os"
	"syscall"
)

// Available is the memory the process may use: RAM, or less if its cgroup
// (v2) says so.
func Available() (int64, error) {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	ram := int64(si.Totalram) * int64(si.Unit)
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if max, ok, err := parseCgroupMax(b); err != nil {
			return 0, fmt.Errorf("/sys/fs/cgroup/memory.max: %w", err)
		} else if ok && max < ram {
			return max, nil
		}
	}
	return ram, nil
}
