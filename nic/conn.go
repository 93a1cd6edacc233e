package nic

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// tcpConn and udpConn are gonet's connections with a Close that also stops
// their deadline timers. gonet leaves a deadline's timer armed until it
// fires, so every closed connection that had one (a device's idle limit, a
// Hello's write limit) kept a runtime timer for up to a minute, and a
// fleet's closed connections a heap of tens of thousands of them, which the
// scheduler scans (runtime.(*timers).adjust).
type tcpConn struct{ *gonet.TCPConn }

func (c tcpConn) Close() error {
	_ = c.TCPConn.SetDeadline(time.Time{})
	return c.TCPConn.Close()
}

type udpConn struct{ *gonet.UDPConn }

func (c udpConn) Close() error {
	_ = c.UDPConn.SetDeadline(time.Time{})
	return c.UDPConn.Close()
}
