package magistral

// Pure functions: the Retry-After and error-body forms that servers other than magistral's send.

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfterSecondsAndDates(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for value, want := range map[string]time.Duration{
		"2": 2 * time.Second, "0.5": 500 * time.Millisecond, "-3": 0,
		"Fri, 02 Jan 2026 03:04:08 GMT": 3 * time.Second, "Fri, 02 Jan 2026 03:04:00 GMT": 0,
	} {
		if got, ok := retryAfter(http.Header{"Retry-After": {value}}, now); !ok || got != want {
			t.Errorf("Retry-After %q: %s, %v; want %s", value, got, ok, want)
		}
	}
	if _, ok := retryAfter(http.Header{"Retry-After": {"soon"}}, now); ok {
		t.Error("Retry-After: soon was read")
	}
	if got := backoff(0, http.Header{"Retry-After": {"3600"}}, now); got != maxDelay {
		t.Errorf("an hour's Retry-After waits %s", got)
	}
	for attempt, limit := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		if got := backoff(attempt, nil, now); got < limit/2 || got > limit {
			t.Errorf("backoff %d: %s", attempt, got)
		}
	}
	if got := backoff(40, nil, now); got < maxDelay/2 || got > maxDelay {
		t.Errorf("backoff 40: %s", got)
	}
}

func TestErrorBodies(t *testing.T) {
	for body, want := range map[string][3]string{
		`{"object":"error","message":"bad","type":"invalid_request_error","param":"model","code":null}`: {"bad", "invalid_request_error", "model"},
		`{"error":{"message":"openai says","type":"server_error","param":null,"code":500}}`:             {"openai says", "server_error", ""},
		`{"detail":[{"loc":["body","model"],"msg":"Field required","type":"missing"}]}`:                 {`[{"loc":["body","model"],"msg":"Field required","type":"missing"}]`, "", ""},
		"<html>Bad Gateway</html>\n": {"<html>Bad Gateway</html>", "", ""},
		`{}`:                         {"Bad Gateway", "", ""},
	} {
		err := newAPIError(502, []byte(body), http.Header{})
		if got := [3]string{err.Message, err.Type, err.Param}; got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}
