// Package event names everything amtsim reports as it runs: the device's
// steps (firmware, dhcp), the reference SCS's, and those of the commands
// around them (the embedded LAN, TAP uplinks). Each name has a level:
// Warn for what an operator should look at (something failed or is
// misconfigured), Info for the rest. Logs (firmware.LogSink,
// scs.LogSink) take the level from here, and the README's list of events
// is checked against Known.
package event

import "log/slog"

// Name is an event's name: "<subject>.<what happened>".
type Name string

// The device's events (firmware and its DHCP client).
const (
	PowerOn        Name = "power.on"
	PowerOff       Name = "power.off"
	PowerCycle     Name = "power.cycle"
	State          Name = "state"
	LinkUp         Name = "link.up"
	LinkDown       Name = "link.down"
	FaultInjected  Name = "fault.injected"
	DHCPDiscover   Name = "dhcp.discover"
	DHCPOffer      Name = "dhcp.offer"
	DHCPRequest    Name = "dhcp.request"
	DHCPBound      Name = "dhcp.bound"
	DHCPRenewing   Name = "dhcp.renewing"
	DHCPRenewed    Name = "dhcp.renewed"
	DHCPRebinding  Name = "dhcp.rebinding"
	DHCPLost       Name = "dhcp.lost"
	DHCPNak        Name = "dhcp.nak"
	DHCPMalformed  Name = "dhcp.malformed"
	DHCPError      Name = "dhcp.error"
	DHCPNoAnswer   Name = "dhcp.no_answer"
	AddressStatic  Name = "address.static"
	AMTListening   Name = "amt.listening"
	SCSConfigured  Name = "scs.configured"
	SCSResolved    Name = "scs.resolved"
	SCSUnresolved  Name = "scs.unresolved"
	DNSMalformed   Name = "dns.malformed"
	HelloSent      Name = "hello.sent"
	HelloFailed    Name = "hello.failed"
	HelloStopped   Name = "hello.stopped"
	HelloOff       Name = "hello.off"
	ConnAccepted   Name = "conn.accepted"
	BootFailed     Name = "boot.failed"
	TLSFailed      Name = "tls.failed"
	PKIAccepted    Name = "pki.accepted"
	HTTPBadRequest Name = "http.bad_request"
	WSMANMalformed Name = "wsman.malformed"
	AuthFailed     Name = "auth.failed"
	SessionLogin   Name = "session.login"
	AMTCall        Name = "amt.call"
	SessionDiscard Name = "session.discarded"
	SessionClosed  Name = "session.closed"
	Provisioned    Name = "provisioned"
	Unprovisioned  Name = "unprovisioned"
	CommitFailed   Name = "commit.failed"
	HostPower      Name = "host.power"
	HelloReceived  Name = "hello.received"
	HelloBad       Name = "hello.bad"
	HelloUnknown   Name = "hello.unknown"
	HelloDropped   Name = "hello.dropped"
	HelloConflict  Name = "hello.conflict"
	SCSStarted     Name = "scs.started"
	SCSStopped     Name = "scs.stopped"
	SCSListening   Name = "scs.listening"
	SCSSession     Name = "scs.session"
	SCSStep        Name = "scs.step"
	SCSFailed      Name = "scs.failed"
	SCSProvisioned Name = "scs.provisioned"
	SCSUnsettled   Name = "scs.unsettled"
	SCSAcceptError Name = "scs.accept_failed"
	LANUp          Name = "lan.up"
	TAPOpened      Name = "tap.opened"
	TAPWarning     Name = "tap.warning"
	PacketOpened   Name = "packet.opened"
	PacketWarning  Name = "packet.warning"
	MetricsServing Name = "metrics.serving"
	// MetricsLingering: the run is over and /metrics stays up for
	// --metrics-linger, so that the last scrape sees the final counts.
	MetricsLingering Name = "metrics.lingering"
	MACDuplicate     Name = "mac.duplicate"
	RunDone          Name = "run.done"
	FleetGC          Name = "fleet.gc"
)

// Info describes one event for the docs.
type Info struct {
	Name  Name
	Level slog.Level
	// Source is who reports it: device, scs or command.
	Source string
	Doc    string
}

// Known lists every event amtsim reports, in the order a device meets
// them.
func Known() []Info {
	const dev, scs, cmd = "device", "scs", "command"
	i, w := slog.LevelInfo, slog.LevelWarn
	return []Info{
		{PowerOn, i, dev, "the device powers on: uuid, service_tag, mac, pci, nic"},
		{State, i, dev, "provisioning state and mode read from MEBx (at power-on and after a commit)"},
		{LinkUp, i, dev, "the NIC's link is up"},
		{LinkDown, w, dev, "the NIC's link went down (the cable pulled: a scenario's fault)"},
		{FaultInjected, w, dev, "a fault changed the device's answer to one call: call, answer (delay, hold, empty, fault, drop)"},
		{DHCPDiscover, i, dev, "DHCPDISCOVER sent (attempt)"},
		{DHCPOffer, i, dev, "an offer taken"},
		{DHCPRequest, i, dev, "DHCPREQUEST sent"},
		{DHCPBound, i, dev, "leased: ip, gateway, dns, domain, lease, server"},
		{DHCPRenewing, i, dev, "T1: renewing with the leasing server"},
		{DHCPRenewed, i, dev, "the lease was extended"},
		{DHCPRebinding, w, dev, "T2: the leasing server did not answer; asking any server"},
		{DHCPLost, w, dev, "the lease ran out: the address is gone"},
		{DHCPNak, w, dev, "a server refused the request"},
		{DHCPMalformed, w, dev, "a DHCP frame that could not be read (counted, dropped)"},
		{DHCPError, w, dev, "a DHCP message could not be built"},
		{DHCPNoAnswer, w, dev, "no offer after 4 DISCOVERs (about a minute): no DHCP server on this network? (it keeps asking)"},
		{AddressStatic, i, dev, "the static address from MEBx is in use"},
		{AMTListening, i, dev, "the AMT ports are open (16992, 16993)"},
		{SCSConfigured, i, dev, "the SCS address typed into MEBx"},
		{SCSResolved, i, dev, "the SCS found by DNS: name, addr"},
		{SCSUnresolved, w, dev, "no SCS found: why (the Hello slot still counts)"},
		{DNSMalformed, w, dev, "a DNS answer that could not be read (counted, dropped)"},
		{HelloSent, i, dev, "a Hello went out: version (PSK or PKI), retry, scs, pid or hashes"},
		{HelloFailed, w, dev, "a Hello could not be sent: err (the next follows the schedule)"},
		{HelloStopped, w, dev, "the Hello window closed before any SCS provisioned the device"},
		{HelloOff, i, dev, "the device sends no Hellos: reason (provisioned, factory mode, small business, no PID)"},
		{ConnAccepted, i, dev, "a connection to an AMT port"},
		{BootFailed, w, dev, "the boot could not go on: err"},
		{TLSFailed, w, dev, "a TLS handshake on 16993 failed: err, and reason for a refused provisioning certificate (no secret in it)"},
		{PKIAccepted, i, dev, "an SCS's provisioning certificate chain was accepted: cn, root (remote configuration)"},
		{HTTPBadRequest, w, dev, "HTTP that could not be read: err (answered 400 or 413)"},
		{WSMANMalformed, w, dev, "a WS-MAN envelope that could not be read (answered with a fault)"},
		{AuthFailed, w, dev, "credentials refused: user, reason; scheme=negotiate for a Kerberos ticket (user is its principal; the token is never logged)"},
		{SessionLogin, i, dev, "an authenticated session: user, port, tls"},
		{AMTCall, i, dev, "one AMT call: op, status (PT_STATUS)"},
		{SessionDiscard, w, dev, "a session closed before CommitChanges: its staged changes are dropped"},
		{SessionClosed, i, dev, "a session ended"},
		{Provisioned, i, dev, "CommitChanges took: the device is provisioned"},
		{Unprovisioned, i, dev, "back to factory or setup (partial)"},
		{CommitFailed, w, dev, "CommitChanges could not persist: err"},
		{HostPower, i, dev, "the simulated host's power state changed"},
		{PowerCycle, i, dev, "the device restarts its boot (power cycle or reset)"},
		{PowerOff, i, dev, "the device is off"},

		{SCSListening, i, scs, "amtsim scs listens for Hellos"},
		{SCSStarted, i, scs, "the SCS's workers run: workers, queue, settling"},
		{HelloReceived, i, scs, "a Hello read: from, pid, retry"},
		{HelloBad, w, scs, "a connection to 9971 carried no readable Hello"},
		{HelloUnknown, w, scs, "a Hello from a PID the database does not hold"},
		{HelloDropped, w, scs, "a Hello found the work queue full (the device is heard at its next Hello)"},
		{HelloConflict, w, scs, "a Hello for a PID in flight from another address: from (tried as a candidate of its own; only the device with the PPS passes)"},
		{SCSSession, i, scs, "a provisioning session starts: addr, attempt"},
		{SCSStep, i, scs, "one step of the provisioning transaction: step, ms, ok"},
		{SCSFailed, w, scs, "a session failed: step, reason, err (retried with backoff)"},
		{SCSProvisioned, i, scs, "a device provisioned and verified, or settled after a restart"},
		{SCSUnsettled, w, scs, "a record left mid-commit could not be settled yet"},
		{SCSAcceptError, w, scs, "accepting on 9971 failed (out of descriptors?): err, count since the last report (once per 10 s; the SCS backs off and goes on)"},
		{SCSStopped, i, scs, "the SCS stopped"},

		{LANUp, i, cmd, "the embedded LAN is up: subnet, provision_server"},
		{TAPOpened, i, cmd, "the TAP uplink is open: created, up, bridge, addrs"},
		{TAPWarning, w, cmd, "the TAP is down, or on no bridge and with no address or route, or the fleet is larger than the kernel's neighbor table"},
		{PacketOpened, i, cmd, "the packet uplink is open on an existing interface, promiscuous for the run"},
		{PacketWarning, w, cmd, "the packet uplink's interface cannot carry devices of their own MACs (a macvlan not in passthru mode, an ipvlan), or the fleet is larger than the kernel's neighbor table"},
		{MACDuplicate, w, cmd, "another host on the uplink's segment sends with one of the devices' MACs"},
		{MetricsServing, i, cmd, "Prometheus /metrics is served: addr"},
		{MetricsLingering, i, cmd, "the run is over; /metrics stays up for the final scrape: addr, for"},
		{FleetGC, i, cmd, "the garbage collector's settings for the run"},
		{RunDone, i, cmd, "amtsim run ends: devices, hellos_sent, hellos_failed"},
	}
}

// Level is how logs show the event: Warn for failures and what an
// operator should fix, Info for the rest (and for names not in Known).
func (n Name) Level() slog.Level {
	switch n {
	case LinkDown, FaultInjected, DHCPRebinding, DHCPLost, DHCPNak, DHCPMalformed, DHCPError, DHCPNoAnswer, SCSUnresolved, DNSMalformed,
		HelloFailed, HelloStopped, BootFailed, TLSFailed, HTTPBadRequest, WSMANMalformed, AuthFailed,
		SessionDiscard, CommitFailed, HelloBad, HelloUnknown, HelloDropped, HelloConflict, SCSFailed, SCSUnsettled, SCSAcceptError,
		TAPWarning, PacketWarning, MACDuplicate:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
