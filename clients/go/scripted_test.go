package magistral_test

// Retries and errors against loopback endpoints whose answers tests/sdk/test_go_sdk.py scripts
// (tests/loopback.py); each answers POSTs with its script in turn, then 200 with a completion
// whose content is a thinking chunk "hmm" and the text "Hello!". The pytest side checks how
// many requests each endpoint got, and when.

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	magistral "github.com/magistral/magistral-go"
)

func scripted(t *testing.T, name string, maxRetries int) *magistral.Client {
	t.Helper()
	url := os.Getenv(name)
	if url == "" {
		t.Skipf("%s names no scripted endpoint", name)
	}
	return magistral.NewClient("k", magistral.WithBaseURL(url), magistral.WithMaxRetries(maxRetries))
}

var ask = magistral.ChatRequest{Model: "m", Messages: []magistral.Message{{Role: "user", Content: "Say hello."}}}

// MAGISTRAL_TEST_RETRY_URL: 429 with Retry-After: 1, then 503, then the completion.
func TestScriptedRetriesHonourRetryAfterSeconds(t *testing.T) {
	client := scripted(t, "MAGISTRAL_TEST_RETRY_URL", 2)
	start := time.Now()
	response, err := client.Chat.Complete(context.Background(), ask)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 950*time.Millisecond {
		t.Fatalf("answered after %s: Retry-After: 1 was not honoured", time.Since(start))
	}
	if response.Text() != "Hello!" || response.Thinking() != "hmm" || response.Usage.TotalTokens != 5 {
		t.Fatalf("response %s", response.Raw)
	}
}

// MAGISTRAL_TEST_RETRY_DATE_URL: 503 with Retry-After as an HTTP date 2 s ahead, then the completion.
func TestScriptedRetriesHonourRetryAfterDates(t *testing.T) {
	client := scripted(t, "MAGISTRAL_TEST_RETRY_DATE_URL", 1)
	start := time.Now()
	if _, err := client.Chat.Complete(context.Background(), ask); err != nil {
		t.Fatal(err)
	}
	// the date has whole seconds: 2 s ahead of the answer is 1 to 2 s from now
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Fatalf("answered after %s: the Retry-After date was not honoured", elapsed)
	}
}

// MAGISTRAL_TEST_BAD_REQUEST_URL: 400 (not retried).
func TestScriptedClientErrorsAreNotRetriedAndCarryTheBody(t *testing.T) {
	client := scripted(t, "MAGISTRAL_TEST_BAD_REQUEST_URL", 3)
	_, err := client.Chat.Complete(context.Background(), ask)
	var apiErr *magistral.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Message != "scripted 400" ||
		apiErr.Type != "scripted" || apiErr.Code != "400" || errors.Is(err, magistral.ErrRateLimited) ||
		errors.Is(err, magistral.ErrServer) || err.Error() != "magistral: HTTP 400: scripted 400" {
		t.Fatalf("400: %v", err)
	}
}

// MAGISTRAL_TEST_RATE_LIMIT_URL: 429 with Retry-After: 0, three times.
func TestScriptedRateLimitsAreTypedAfterTheRetries(t *testing.T) {
	client := scripted(t, "MAGISTRAL_TEST_RATE_LIMIT_URL", 1)
	stream, err := client.Chat.Stream(context.Background(), ask)
	var apiErr *magistral.APIError
	if stream != nil || !errors.As(err, &apiErr) || !apiErr.RateLimited() || !errors.Is(err, magistral.ErrRateLimited) ||
		errors.Is(err, magistral.ErrAuthentication) || apiErr.Header.Get("Retry-After") != "0" {
		t.Fatalf("429: %v", err)
	}
}

// MAGISTRAL_TEST_SLOW_RETRY_URL: 429 with Retry-After: 30; the caller's context ends the wait.
func TestScriptedCancelDuringABackoffReturnsAtOnce(t *testing.T) {
	client := scripted(t, "MAGISTRAL_TEST_SLOW_RETRY_URL", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.Chat.Complete(ctx, ask)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
}

// A port nobody listens on: connection errors are retried, then typed.
func TestConnectionErrorsAreRetriedThenTyped(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + listener.Addr().String()
	listener.Close()
	client := magistral.NewClient("k", magistral.WithBaseURL(url), magistral.WithMaxRetries(2))
	start := time.Now()
	_, err = client.Models.List(context.Background())
	var connErr *magistral.ConnectionError
	// two backoffs: 0.25 to 0.5 s, then 0.5 to 1 s
	if !errors.As(err, &connErr) || time.Since(start) < 700*time.Millisecond {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
}
