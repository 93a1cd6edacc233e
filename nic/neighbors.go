package nic

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// neighborMaxPath is where Linux keeps the most ARP entries its one IPv4
// neighbor table holds, for every namespace (gc_thresh3, default 1,024).
const neighborMaxPath = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"

// NeighborProblem says what a host on this machine will meet when it
// talks to more devices than its kernel's neighbor table holds (an SCS,
// a DHCP server or a router on the TAP's kernel side): past the limit the
// kernel logs "neighbor table overflow" and drops what it sends to the
// devices it has no entry for. "" when devices fit or the limit cannot be
// read.
func NeighborProblem(devices int) string {
	b, err := os.ReadFile(neighborMaxPath)
	if err != nil {
		return ""
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return ""
	}
	return neighborProblem(devices, max)
}

func neighborProblem(devices, max int) string {
	if devices <= max {
		return ""
	}
	return fmt.Sprintf("%d devices and this kernel's neighbor table holds %d (%s): a host here that talks to all of them "+
		"(an SCS, a DHCP server) will see \"neighbor table overflow\" and lose what it sends past that; "+
		"raise it with sysctl -w net.ipv4.neigh.default.gc_thresh3=%d (and gc_thresh2 to match)", devices, max, neighborMaxPath, 2*devices)
}
