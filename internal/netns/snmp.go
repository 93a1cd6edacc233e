package netns

import (
	"fmt"
	"strconv"
	"strings"
)

// UDPRcvbufErrors is the namespace's count of UDP datagrams dropped
// because a socket's receive buffer was full (/proc/net/snmp, Udp
// RcvbufErrors): a server that falls behind a burst loses them here.
func (ns *NS) UDPRcvbufErrors() (uint64, error) {
	out, err := ns.Exec("cat", "/proc/net/snmp")
	if err != nil {
		return 0, fmt.Errorf("netns %s: /proc/net/snmp: %v: %s", ns.Name, err, out)
	}
	return snmpField(out, "Udp", "RcvbufErrors")
}

// snmpField reads one counter from /proc/net/snmp's layout: for each
// protocol a line of names ("Udp: InDatagrams NoPorts ...") and then a
// line of values in the same order.
func snmpField(text, proto, field string) (uint64, error) {
	lines := strings.Split(text, "\n")
	prefix := proto + ":"
	for i := 0; i+1 < len(lines); i++ {
		names := strings.Fields(lines[i])
		if len(names) == 0 || names[0] != prefix {
			continue
		}
		values := strings.Fields(lines[i+1])
		if len(values) != len(names) || values[0] != prefix {
			return 0, fmt.Errorf("snmp: %s: %d names but %d values", proto, len(names)-1, len(values)-1)
		}
		for j, n := range names[1:] {
			if n == field {
				v, err := strconv.ParseUint(values[j+1], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("snmp: %s %s: %w", proto, field, err)
				}
				return v, nil
			}
		}
		return 0, fmt.Errorf("snmp: %s has no %s", proto, field)
	}
	return 0, fmt.Errorf("snmp: no %s lines", proto)
}
