package magistral

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels to tell errors apart with errors.Is: an *APIError matches the one of its status
// code, a *ConnectionError that timed out matches ErrTimeout.
var (
	ErrAuthentication = errors.New("magistral: authentication failed")      // 401: missing or wrong key
	ErrPermission     = errors.New("magistral: permission denied")          // 402, 403: e.g. billing not in good standing
	ErrNotFound       = errors.New("magistral: not found")                  // 404: unknown model or route
	ErrRateLimited    = errors.New("magistral: rate limited")               // 429: over the requests or tokens per minute
	ErrServer         = errors.New("magistral: server error")               // 5xx: overloaded, loading, failed
	ErrTimeout        = errors.New("magistral: timed out")                  // no answer within the client's timeout
	ErrStreamEnded    = errors.New("magistral: stream ended before [DONE]") // the connection closed mid-answer
)

// APIError is an error status from the server, after the retries. Body is the raw body; Message,
// Type, Param and Code come from Mistral's error object ({"object": "error", "message", ...}),
// or OpenAI's ({"error": {...}}), when the body is one.
type APIError struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	Message    string
	Type       string // e.g. invalid_request_error, authentication_error, rate_limit_error
	Param      string
	Code       string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("magistral: HTTP %d: %s", e.StatusCode, e.Message)
}

// Is makes errors.Is(err, ErrRateLimited) and the other sentinels work on an *APIError.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrAuthentication:
		return e.StatusCode == http.StatusUnauthorized
	case ErrPermission:
		return e.StatusCode == http.StatusPaymentRequired || e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrServer:
		return e.StatusCode >= 500
	}
	return false
}

// RateLimited says whether the server refused the request for its rate limits (429).
func (e *APIError) RateLimited() bool { return e.StatusCode == http.StatusTooManyRequests }

// ConnectionError is a request that got no answer (after the retries): refused or lost
// connections, timeouts. Err is the cause.
type ConnectionError struct{ Err error }

func (e *ConnectionError) Error() string { return "magistral: connection error: " + e.Err.Error() }
func (e *ConnectionError) Unwrap() error { return e.Err }

// errorObject reads both Mistral's flat error body and OpenAI's {"error": {...}}; param and
// code are often null, sometimes numbers, so they stay raw.
type errorObject struct {
	Message json.RawMessage `json:"message"`
	Type    string          `json:"type"`
	Param   json.RawMessage `json:"param"`
	Code    json.RawMessage `json:"code"`
	Detail  json.RawMessage `json:"detail"` // 422: [{"loc", "msg", "type"}]
	Error   *errorObject    `json:"error"`
}

func newAPIError(status int, body []byte, header http.Header) *APIError {
	e := &APIError{StatusCode: status, Header: header, Body: body}
	var obj errorObject
	if json.Unmarshal(body, &obj) != nil {
		e.Message = strings.TrimSpace(string(body)) // not JSON: a proxy's page, plain text
		return e
	}
	if obj.Message == nil && obj.Error != nil {
		obj = *obj.Error
	}
	e.Message, e.Type, e.Param, e.Code = rawText(obj.Message), obj.Type, rawText(obj.Param), rawText(obj.Code)
	if e.Message == "" {
		e.Message = rawText(obj.Detail) // FastAPI's validation errors carry only a detail
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// rawText is a JSON string's value, another JSON value's text, or "" for null or absent.
func rawText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if text := string(raw); text != "null" {
		return text
	}
	return ""
}
