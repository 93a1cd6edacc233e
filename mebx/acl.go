package mebx

import (
	"errors"
	"fmt"
)

// AMT's rules for its ACL, enforced by the firmware and checked by an SCS
// before it sends anything: a profile that breaks them fails every
// session.
const (
	// MaxUsers is how many user entries the ACL holds beside the admin.
	MaxUsers = 7
	// MaxUserName is the longest Digest user name.
	MaxUserName = 16
	// MinRealm and MaxRealm bound the realms a user may be given.
	MinRealm, MaxRealm = 2, 31
)

// ErrInvalidUserName is a Digest user name AMT refuses (INVALID_NAME).
var ErrInvalidUserName = errors.New("invalid user name")

// CheckUserName checks a Digest user name: 1 to 16 printable ASCII
// characters, none of space, : " or ,.
func CheckUserName(name string) error {
	if name == "" || len(name) > MaxUserName {
		return fmt.Errorf("mebx: %w: %q must be 1 to %d characters", ErrInvalidUserName, name, MaxUserName)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' || r == '"' || r == ',' {
			return fmt.Errorf("mebx: %w: %q: printable ASCII without space, : \" or ,", ErrInvalidUserName, name)
		}
	}
	return nil
}
