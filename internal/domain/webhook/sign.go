package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every webhook signing secret.
const SecretPrefix = "whsec_"

// secretBytes is the number of random bytes in a new secret (the spec asks for 24 to 64).
const secretBytes = 32

// ErrInvalidSecret is returned by Sign for a secret that is not "whsec_" + base64 of
// at least 24 bytes.
var ErrInvalidSecret = errors.New("webhook: invalid signing secret")

// NewSecret returns a new signing secret: "whsec_" + standard base64 of 32 random bytes.
// It returns an error only when the system's random source fails.
func NewSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// decodeSecret returns the key bytes of a "whsec_" secret.
func decodeSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(key) < 24 {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// Sign returns the webhook-signature header value for body: "v1,<base64 HMAC-SHA256(key,
// msgID+"."+unixSeconds(ts)+"."+body)>" for each secret, separated by spaces (several
// during a secret rotation). body must be the exact bytes sent.
// It returns ErrInvalidSecret for a malformed secret, or an error when secrets is empty.
func Sign(secrets []string, msgID string, ts time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", errors.New("webhook: no signing secret")
	}
	var sb strings.Builder
	prefix := msgID + "." + strconv.FormatInt(ts.Unix(), 10) + "."
	for i, s := range secrets {
		key, err := decodeSecret(s)
		if err != nil {
			return "", err
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(prefix))
		mac.Write(body)
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return sb.String(), nil
}
