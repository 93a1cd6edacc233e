package tlspsk

import "fmt"

// alert is a TLS alert description (RFC 5246 §7.2, RFC 4279 §2).
type alert uint8

const (
	alertCloseNotify        alert = 0
	alertUnexpectedMessage  alert = 10
	alertBadRecordMAC       alert = 20
	alertRecordOverflow     alert = 22
	alertHandshakeFailure   alert = 40
	alertIllegalParameter   alert = 47
	alertDecodeError        alert = 50
	alertDecryptError       alert = 51
	alertProtocolVersion    alert = 70
	alertInternalError      alert = 80
	alertNoRenegotiation    alert = 100
	alertUnknownPSKIdentity alert = 115
	alertLevelWarning       uint8 = 1
	alertLevelError         uint8 = 2
)

var alertNames = map[alert]string{
	alertCloseNotify:        "close_notify",
	alertUnexpectedMessage:  "unexpected_message",
	alertBadRecordMAC:       "bad_record_mac",
	alertRecordOverflow:     "record_overflow",
	alertHandshakeFailure:   "handshake_failure",
	alertIllegalParameter:   "illegal_parameter",
	alertDecodeError:        "decode_error",
	alertDecryptError:       "decrypt_error",
	alertProtocolVersion:    "protocol_version",
	alertInternalError:      "internal_error",
	alertNoRenegotiation:    "no_renegotiation",
	alertUnknownPSKIdentity: "unknown_psk_identity",
}

func (a alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return fmt.Sprintf("alert(%d)", uint8(a))
}

// AlertError is a fatal alert: one this side sent (Sent) or one the peer
// sent. Tests and callers match the description with errors.As.
type AlertError struct {
	Description uint8
	Sent        bool
	Reason      string
}

func (e *AlertError) Error() string {
	dir := "received"
	if e.Sent {
		dir = "sent"
	}
	s := fmt.Sprintf("tlspsk: %s alert %s", dir, alert(e.Description))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Alert descriptions callers may compare with AlertError.Description.
const (
	AlertBadRecordMAC       = uint8(alertBadRecordMAC)
	AlertDecryptError       = uint8(alertDecryptError)
	AlertHandshakeFailure   = uint8(alertHandshakeFailure)
	AlertUnknownPSKIdentity = uint8(alertUnknownPSKIdentity)
	AlertProtocolVersion    = uint8(alertProtocolVersion)
)
