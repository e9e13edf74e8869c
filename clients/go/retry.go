package magistral

import (
	"context"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryStatus lists the statuses worth another try; other 4xx (and 501) would fail again.
var retryStatus = map[int]bool{429: true, 500: true, 502: true, 503: true, 504: true}

const (
	baseDelay = 500 * time.Millisecond
	maxDelay  = 60 * time.Second
)

// retryAfter reads a Retry-After header: delta-seconds or an HTTP date, relative to now.
func retryAfter(header http.Header, now time.Time) (time.Duration, bool) {
	value := strings.TrimSpace(header.Get("Retry-After"))
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseFloat(value, 64); err == nil {
		if seconds < 0 {
			seconds = 0
		}
		return time.Duration(seconds * float64(time.Second)), true
	}
	if date, err := http.ParseTime(value); err == nil {
		if wait := date.Sub(now); wait > 0 {
			return wait, true
		}
		return 0, true
	}
	return 0, false
}

// backoff is the delay before retry number attempt (0-based): what the server asked for, or
// an exponential delay with jitter (so that many clients do not come back at once), capped.
func backoff(attempt int, header http.Header, now time.Time) time.Duration {
	if told, ok := retryAfter(header, now); ok {
		if told > maxDelay {
			return maxDelay
		}
		return told
	}
	delay := maxDelay
	if attempt < 16 {
		delay = baseDelay << attempt
	}
	if delay > maxDelay {
		delay = maxDelay
	}
	return time.Duration(float64(delay) * (0.5 + rand.Float64()/2))
}

// sleep waits d, or returns early with the context's error.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
