package negotiate

import (
	"fmt"

	"github.com/jcmturner/gokrb5/v8/crypto/rfc4757"
)

// KeyFromPassword is the RC4-HMAC key of a password (RFC 4757 §5: MD4 of
// its UTF-16LE form): the MasterKey an SCS gives AMT for the AMT object's
// password, and the key a KDC holds for every SPN registered with that
// password, since RC4-HMAC keys have no salt.
func KeyFromPassword(password string) ([]byte, error) {
	if password == "" {
		return nil, fmt.Errorf("negotiate: empty password")
	}
	return rfc4757.StringToKey(password)
}
