package mebx

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// CheckPassword applies the MEBx strong password rule: 8–32 characters, at
// least one upper-case letter, one lower-case letter, one digit and one
// special character; ':' '"' ',' are not allowed; '_' and space are allowed
// but do not count as special. The error says every rule that failed.
func CheckPassword(p string) error {
	var missing []string
	n := utf8.RuneCountInString(p)
	if n < 8 || n > 32 {
		missing = append(missing, fmt.Sprintf("must be 8 to 32 characters (has %d)", n))
	}
	var upper, lower, digit, special bool
	for _, r := range p {
		switch {
		case r == ':' || r == '"' || r == ',':
			return fmt.Errorf("mebx: %w: the characters : \" , are not allowed", ErrWeakPassword)
		case r > 0x7E || r < 0x20:
			return fmt.Errorf("mebx: %w: only printable ASCII characters are allowed", ErrWeakPassword)
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= '0' && r <= '9':
			digit = true
		case r == '_' || r == ' ':
			// allowed, but not special
		default:
			special = true
		}
	}
	if !upper {
		missing = append(missing, "needs an upper-case letter")
	}
	if !lower {
		missing = append(missing, "needs a lower-case letter")
	}
	if !digit {
		missing = append(missing, "needs a digit")
	}
	if !special {
		missing = append(missing, "needs a special character other than _ and space")
	}
	if len(missing) > 0 {
		return fmt.Errorf("mebx: %w: %s", ErrWeakPassword, strings.Join(missing, "; "))
	}
	return nil
}
