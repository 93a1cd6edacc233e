package nic

import "net"

// A Port is a NIC as its uplink sees it.
type Port interface {
	// HardwareAddr is the port's MAC, for uplinks that demultiplex.
	HardwareAddr() net.HardwareAddr
	// DeliverFrame hands the port a frame from the wire; the frame is valid
	// only for the call and must not be modified.
	DeliverFrame(frame []byte)
}

// An Uplink connects ports to a wire: a segment of the embedded LAN or a TAP
// interface. Many ports may share one uplink, like PCs on a switch.
type Uplink interface {
	Attach(p Port) (Attachment, error)
}

// An Attachment is one port's connection to its uplink.
type Attachment interface {
	// Send puts a frame on the wire. The uplink takes ownership of frame and
	// must not block on the receivers: delivery to another port of the
	// same process happens on another goroutine, so that no stack ever
	// re-enters itself.
	Send(frame []byte) error
	// Detach unplugs the port.
	Detach()
}
