// Package ptstatus holds AMT's PT_STATUS codes (docs/protocol.md §9): the
// numbers both front ends (WS-MAN ReturnValue and EOI StatusCode) answer
// with, and the SCS reads.
package ptstatus

import (
	"fmt"
	"strconv"
)

// Code is a PT_STATUS value.
type Code uint32

// The codes amtsim uses, by their SDK names.
const (
	Success                  Code = 0x00
	InternalError            Code = 0x01
	NotReady                 Code = 0x02
	InvalidPTMode            Code = 0x03
	InvalidMessageLength     Code = 0x04
	InvalidName              Code = 0x0C
	InvalidByteCount         Code = 0x0F
	NotPermitted             Code = 0x10
	MaxLimitReached          Code = 0x17
	InvalidAuthType          Code = 0x18
	AuthenticationFailed     Code = 0x19
	InvalidDHCPMode          Code = 0x1A
	InvalidIPAddress         Code = 0x1B
	InvalidDomainName        Code = 0x1C
	RequestUnexpected        Code = 0x1E
	InvalidProvisioningState Code = 0x20
	InvalidTime              Code = 0x22
	InvalidIndex             Code = 0x23
	InvalidParameter         Code = 0x24
	InvalidNetmask           Code = 0x25
	FlashWriteLimitExceeded  Code = 0x26
	InvalidPIDFormat         Code = 0x2A
	InvalidPPSFormat         Code = 0x2B
	CertificateNotReady      Code = 0x31
	InvalidHandle            Code = 0x805
	InvalidPassword          Code = 0x806
	InvalidRealm             Code = 0x807
	StorageACLEntryInUse     Code = 0x808
	DataMissing              Code = 0x809
	Duplicate                Code = 0x80A
	PKIMissingKeys           Code = 0x80C
	InvalidKey               Code = 0x80E
	InvalidCert              Code = 0x80F
	CertKeyNotMatch          Code = 0x810
	Unsupported              Code = 0x812
	NotFound                 Code = 0x814
)

var names = map[Code]string{
	Success: "SUCCESS", InternalError: "INTERNAL_ERROR", NotReady: "NOT_READY", InvalidPTMode: "INVALID_PT_MODE",
	InvalidMessageLength: "INVALID_MESSAGE_LENGTH", InvalidName: "INVALID_NAME", InvalidByteCount: "INVALID_BYTE_COUNT",
	NotPermitted: "NOT_PERMITTED", MaxLimitReached: "MAX_LIMIT_REACHED", InvalidAuthType: "INVALID_AUTH_TYPE",
	AuthenticationFailed: "AUTHENTICATION_FAILED", InvalidDHCPMode: "INVALID_DHCP_MODE", InvalidIPAddress: "INVALID_IP_ADDRESS",
	InvalidDomainName: "INVALID_DOMAIN_NAME", RequestUnexpected: "REQUEST_UNEXPECTED",
	InvalidProvisioningState: "INVALID_PROVISIONING_STATE", InvalidTime: "INVALID_TIME", InvalidIndex: "INVALID_INDEX",
	InvalidParameter: "INVALID_PARAMETER", InvalidNetmask: "INVALID_NETMASK", FlashWriteLimitExceeded: "FLASH_WRITE_LIMIT_EXCEEDED",
	InvalidPIDFormat: "INVALID_PID_FORMAT", InvalidPPSFormat: "INVALID_PPS_FORMAT", InvalidHandle: "INVALID_HANDLE", CertificateNotReady: "CERTIFICATE_NOT_READY",
	InvalidPassword: "INVALID_PASSWORD", InvalidRealm: "INVALID_REALM", StorageACLEntryInUse: "STORAGE_ACL_ENTRY_IN_USE",
	DataMissing: "DATA_MISSING", Duplicate: "DUPLICATE", PKIMissingKeys: "PKI_MISSING_KEYS", InvalidKey: "INVALID_KEY",
	InvalidCert: "INVALID_CERT", CertKeyNotMatch: "CERT_KEY_NOT_MATCH", Unsupported: "UNSUPPORTED", NotFound: "NOT_FOUND",
}

func (c Code) String() string {
	if n, ok := names[c]; ok {
		return fmt.Sprintf("%s (0x%X)", n, uint32(c))
	}
	return fmt.Sprintf("PT_STATUS 0x%X", uint32(c))
}

// Error is a non-success status as a Go error, for callers that treat
// one as a failure.
type Error struct {
	Op   string
	Code Code
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Code) }

// Parse reads a status as scenario files and logs write it: its name
// (INVALID_PASSWORD), or its number in hex (0x806) or decimal (2054).
func Parse(s string) (Code, error) {
	for c, n := range names {
		if n == s {
			return c, nil
		}
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a PT_STATUS name or number", s)
	}
	return Code(v), nil
}
