// Package magistral is a Go client for Mistral-compatible chat APIs (magistral's own server,
// Mistral's, vLLM's): chat completions and streams with the reasoning trace (thinking) kept
// apart from the answer, images, models, usage and invoices, retries with backoff, typed errors.
// It uses only the standard library.
package magistral

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Version is sent in the User-Agent header.
const Version = "0.1.0"

// DefaultBaseURL is used when neither WithBaseURL nor MAGISTRAL_BASE_URL says otherwise.
const DefaultBaseURL = "http://127.0.0.1:8000"

// Client talks to one server with one API key. It is safe for concurrent use.
type Client struct {
	Chat   *ChatService
	Models *ModelsService
	Usage  *UsageService

	baseURL    string
	apiKey     string
	http       *http.Client
	maxRetries int
	timeout    time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithBaseURL sets the server's URL, without /v1 (as Mistral's SDKs take it).
func WithBaseURL(url string) Option { return func(c *Client) { c.baseURL = url } }

// WithMaxRetries sets how many times a request is retried after a 429, a 5xx or a lost
// connection (default 2; 0 turns retries off).
func WithMaxRetries(n int) Option { return func(c *Client) { c.maxRetries = n } }

// WithHTTPClient sets the http.Client that sends requests (proxies, TLS, transports).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithTimeout bounds each attempt of a request (default 10 minutes, 0 for none). For a stream
// it bounds the wait for the response and then each silence between two lines, not the whole
// stream: a long answer is fine, a stalled server is not.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// NewClient returns a client. An empty apiKey falls back to MAGISTRAL_API_KEY, and the base
// URL to MAGISTRAL_BASE_URL, then DefaultBaseURL, as the Python SDK does.
func NewClient(apiKey string, options ...Option) *Client {
	c := &Client{apiKey: apiKey, maxRetries: 2, timeout: 10 * time.Minute, http: http.DefaultClient,
		baseURL: os.Getenv("MAGISTRAL_BASE_URL")}
	if c.apiKey == "" {
		c.apiKey = os.Getenv("MAGISTRAL_API_KEY")
	}
	for _, option := range options {
		option(c)
	}
	if c.baseURL == "" {
		c.baseURL = DefaultBaseURL
	}
	c.baseURL = strings.TrimRight(c.baseURL, "/")
	c.Chat = &ChatService{c}
	c.Models = &ModelsService{c}
	c.Usage = &UsageService{c}
	return c
}

// watchdog cancels an attempt when the server stays silent longer than the client's timeout;
// reset it whenever data arrives. A nil watchdog (no timeout) does nothing.
type watchdog struct {
	timer *time.Timer
	limit time.Duration
	fired atomic.Bool
}

func newWatchdog(limit time.Duration, cancel context.CancelFunc) *watchdog {
	if limit <= 0 {
		return nil
	}
	w := &watchdog{limit: limit}
	w.timer = time.AfterFunc(limit, func() { w.fired.Store(true); cancel() })
	return w
}

func (w *watchdog) reset() {
	if w != nil {
		w.timer.Reset(w.limit)
	}
}

func (w *watchdog) stop() {
	if w != nil {
		w.timer.Stop()
	}
}

// connectionError says why a transport call failed: the watchdog's timeout, or err itself.
func (w *watchdog) connectionError(err error) error {
	if w != nil && w.fired.Load() {
		err = fmt.Errorf("%w: nothing received for %s", ErrTimeout, w.limit)
	}
	return &ConnectionError{Err: err}
}

// response is an open 2xx response of a stream; close releases it.
type response struct {
	*http.Response
	cancel   context.CancelFunc
	watchdog *watchdog
}

func (r *response) close() {
	r.watchdog.stop()
	r.Body.Close()
	r.cancel()
}

// getJSON sends a request (body nil for none) and decodes the JSON answer into out.
func (c *Client) getJSON(ctx context.Context, method, path string, body, out interface{}) error {
	data, _, err := c.send(ctx, method, path, body, false)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("magistral: decoding the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// send makes a request, retried on 429/5xx/connection errors, and returns the whole body or,
// for a stream, the response open with its body unread (retries end once it is returned).
func (c *Client) send(ctx context.Context, method, path string, body interface{}, stream bool) ([]byte, *response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, nil, fmt.Errorf("magistral: encoding the request: %w", err)
		}
	}
	for attempt := 0; ; attempt++ {
		data, resp, err := c.attempt(ctx, method, path, payload, stream)
		if err == nil {
			return data, resp, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err() // the caller gave up: no retry, and the error says so
		}
		var apiErr *APIError
		isAPIErr := errors.As(err, &apiErr)
		if attempt >= c.maxRetries || (isAPIErr && !retryStatus[apiErr.StatusCode]) {
			return nil, nil, err
		}
		var header http.Header
		if isAPIErr {
			header = apiErr.Header
		}
		if err := sleep(ctx, backoff(attempt, header, time.Now())); err != nil {
			return nil, nil, err
		}
	}
}

// attempt is one try of a request. A non-stream body is read here, so that a connection lost
// while reading it is retried like one lost before the answer.
func (c *Client) attempt(ctx context.Context, method, path string, payload []byte, stream bool) ([]byte, *response, error) {
	ctx, cancel := context.WithCancel(ctx)
	dog := newWatchdog(c.timeout, cancel)
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reader)
	if err != nil {
		dog.stop()
		cancel()
		return nil, nil, fmt.Errorf("magistral: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("User-Agent", "magistral-go/"+Version)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		dog.stop()
		cancel()
		return nil, nil, dog.connectionError(err)
	}
	r := &response{Response: resp, cancel: cancel, watchdog: dog}
	if stream && resp.StatusCode < 400 {
		dog.reset() // from here on the timeout bounds each silence, not the whole stream
		return nil, r, nil
	}
	defer r.close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, dog.connectionError(err)
	}
	if resp.StatusCode >= 400 {
		return nil, nil, newAPIError(resp.StatusCode, data, resp.Header)
	}
	return data, nil, nil
}
