package magistral_test

// Tests against a real `magistral serve` (the default model): MAGISTRAL_BASE_URL and
// MAGISTRAL_API_KEY name it, MAGISTRAL_MODEL the model (default magistral-medium-latest, an
// alias), MAGISTRAL_TEST_EOS_TOKEN the model's end token (to ban it: answers that do not stop).
// tests/sdk/test_go_sdk.py starts the server and runs these; without it they are skipped.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	magistral "github.com/magistral/magistral-go"
)

func serverClient(t *testing.T, options ...magistral.Option) (*magistral.Client, string) {
	t.Helper()
	if os.Getenv("MAGISTRAL_BASE_URL") == "" || os.Getenv("MAGISTRAL_API_KEY") == "" {
		t.Skip("MAGISTRAL_BASE_URL and MAGISTRAL_API_KEY name no server")
	}
	model := os.Getenv("MAGISTRAL_MODEL")
	if model == "" {
		model = "magistral-medium-latest"
	}
	return magistral.NewClient("", options...), model // the key and URL come from the environment
}

func hello(model string, maxTokens int) magistral.ChatRequest {
	return magistral.ChatRequest{Model: model, MaxTokens: magistral.Int(maxTokens), Temperature: magistral.Float(0),
		Messages: []magistral.Message{{Role: "user", Content: "Say hello."}}}
}

// collect reads a stream to its end.
func collect(t *testing.T, stream *magistral.Stream) []magistral.Event {
	t.Helper()
	defer stream.Close()
	var events []magistral.Event
	for stream.Next() {
		events = append(events, stream.Event())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream failed after %d events: %v", len(events), err)
	}
	return events
}

func TestServerModels(t *testing.T) {
	client, model := serverClient(t)
	ctx := context.Background()
	models, err := client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	card, err := client.Models.Retrieve(ctx, model)
	if err != nil {
		t.Fatal(err)
	}
	var listed *magistral.Model
	for i := range models {
		if models[i].ID == card.ID {
			listed = &models[i]
		}
	}
	if listed == nil || card.ID == model && len(card.Aliases) == 0 || card.Type != "base" ||
		!card.Capabilities.CompletionChat || card.MaxContextLength <= 0 {
		t.Fatalf("card of %s: %+v, listed as %+v", model, card, listed)
	}
	_, err = client.Models.Retrieve(ctx, "no-such-model")
	var apiErr *magistral.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !errors.Is(err, magistral.ErrNotFound) ||
		apiErr.Param != "model" || !strings.Contains(apiErr.Message, "no-such-model") {
		t.Fatalf("unknown model: %v", err)
	}
}

func TestServerCompleteAndStreamGiveTheSameGreedyAnswer(t *testing.T) {
	client, model := serverClient(t)
	ctx := context.Background()
	response, err := client.Chat.Complete(ctx, hello(model, 8))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(response.ID) || response.Text() == "" ||
		response.Thinking() != "" || response.Usage.TotalTokens != response.Usage.PromptTokens+response.Usage.CompletionTokens ||
		(response.FinishReason() != "stop" && response.FinishReason() != "length") || !json.Valid(response.Raw) {
		t.Fatalf("response: %+v", response)
	}
	stream, err := client.Chat.Stream(ctx, hello(model, 8))
	if err != nil {
		t.Fatal(err)
	}
	events := collect(t, stream)
	if len(events) == 0 {
		t.Fatal("no events")
	}
	var text strings.Builder
	for _, event := range events[:len(events)-1] {
		if event.Kind != magistral.EventText {
			t.Fatalf("a model that does not think streamed %+v", event)
		}
		text.WriteString(event.Text)
	}
	end := events[len(events)-1]
	if text.String() != response.Text() || end.Kind != magistral.EventEnd || end.FinishReason != response.FinishReason() ||
		end.Usage == nil || *end.Usage != response.Usage {
		t.Fatalf("streamed %q then %+v; completed %q, %+v", text.String(), end, response.Text(), response.Usage)
	}
}

var weather = magistral.FunctionTool("get_weather", "Weather in a city", map[string]interface{}{
	"type": "object", "required": []string{"city"},
	"properties": map[string]interface{}{"city": map[string]interface{}{"type": "string", "maxLength": 30}},
})

func TestServerToolCallsWholeStreamedAndAnswered(t *testing.T) {
	client, model := serverClient(t)
	ctx := context.Background()
	ask := magistral.ChatRequest{Model: model, Temperature: magistral.Float(0), Tools: []magistral.Tool{weather},
		ToolChoice: "any", Messages: []magistral.Message{{Role: "user", Content: "What is the weather in Paris?"}}}
	response, err := client.Chat.Complete(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	calls := response.ToolCalls()
	if response.FinishReason() != "tool_calls" || len(calls) == 0 {
		t.Fatalf("no tool call: %s", response.Raw)
	}
	for _, call := range calls {
		var arguments struct{ City string }
		if !regexp.MustCompile(`^[A-Za-z0-9]{9}$`).MatchString(call.ID) || call.Type != "function" ||
			call.Function.Name != "get_weather" || json.Unmarshal([]byte(call.Function.Arguments), &arguments) != nil ||
			arguments.City == "" {
			t.Fatalf("call: %+v", call)
		}
	}
	stream, err := client.Chat.Stream(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	var streamed []magistral.FunctionCall
	events := collect(t, stream)
	for _, event := range events {
		if event.Kind == magistral.EventToolCall {
			streamed = append(streamed, event.ToolCall.Function)
		}
	}
	if len(streamed) != len(calls) || streamed[0] != calls[0].Function || events[len(events)-1].FinishReason != "tool_calls" {
		t.Fatalf("streamed %+v, completed %+v", streamed, calls)
	}
	// the history of a call and its result goes back, and the model answers in text
	answer := ask
	answer.ToolChoice, answer.MaxTokens = "none", magistral.Int(8)
	answer.Messages = append(answer.Messages, magistral.Message{Role: "assistant", ToolCalls: calls[:1]},
		magistral.ToolMessage(calls[0].ID, calls[0].Function.Name, `{"temperature": 18, "sky": "clear"}`))
	final, err := client.Chat.Complete(ctx, answer)
	if err != nil {
		t.Fatal(err)
	}
	if final.Text() == "" || len(final.ToolCalls()) != 0 {
		t.Fatalf("answer to the tool's result: %s", final.Raw)
	}
}

func TestServerErrorsAreTyped(t *testing.T) {
	_, model := serverClient(t)
	start := time.Now()
	_, err := magistral.NewClient("wrong-key").Chat.Complete(context.Background(), hello(model, 4))
	var apiErr *magistral.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || !errors.Is(err, magistral.ErrAuthentication) ||
		errors.Is(err, magistral.ErrRateLimited) || apiErr.Type != "authentication_error" || apiErr.Message == "" ||
		!strings.Contains(string(apiErr.Body), apiErr.Message) {
		t.Fatalf("wrong key: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("a 401 was retried: it took %s", time.Since(start))
	}
	client, _ := serverClient(t)
	_, err = client.Chat.Complete(context.Background(), magistral.ChatRequest{Model: model,
		Messages: []magistral.Message{{Role: "user", Content: "hi"}}, Temperature: magistral.Float(9)})
	if !errors.As(err, &apiErr) || apiErr.StatusCode/100 != 4 || !strings.Contains(apiErr.Message, "temperature") {
		t.Fatalf("temperature 9: %v", err)
	}
}

// endless asks for an answer that does not stop by itself: the end token is banned.
func endless(t *testing.T, model string) magistral.ChatRequest {
	eos := os.Getenv("MAGISTRAL_TEST_EOS_TOKEN")
	if eos == "" {
		t.Skip("MAGISTRAL_TEST_EOS_TOKEN is not set")
	}
	request := hello(model, 3000)
	request.Extra = map[string]interface{}{"logit_bias": map[string]int{eos: -100}}
	return request
}

// waitIdle waits until the server generates nothing: it stopped the abandoned answer.
func waitIdle(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(os.Getenv("MAGISTRAL_BASE_URL") + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var health struct {
			Active int `json:"active_sequences"`
			Queued int `json:"queued_sequences"`
		}
		err = json.NewDecoder(resp.Body).Decode(&health)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if health.Active == 0 && health.Queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still generates %s after the client left: %+v", within, health)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServerCancellingOrClosingAStreamStopsTheGeneration(t *testing.T) {
	client, model := serverClient(t)
	request := endless(t, model)
	for _, how := range []string{"cancel", "close"} {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := client.Chat.Stream(ctx, request)
		if err != nil {
			t.Fatal(err)
		}
		if !stream.Next() || stream.Event().Kind != magistral.EventText {
			t.Fatalf("%s: first event %+v, %v", how, stream.Event(), stream.Err())
		}
		if how == "cancel" {
			cancel()
			for stream.Next() { // events already read may come out; then the stream ends
			}
			if !errors.Is(stream.Err(), context.Canceled) {
				t.Fatalf("after cancel: %v", stream.Err())
			}
		} else {
			stream.Close()
			if stream.Next() || stream.Err() != nil {
				t.Fatalf("after Close: %+v, %v", stream.Event(), stream.Err())
			}
		}
		cancel()
		waitIdle(t, 10*time.Second)
	}
}

func TestServerTimeoutIsAConnectionError(t *testing.T) {
	client, model := serverClient(t, magistral.WithTimeout(100*time.Millisecond), magistral.WithMaxRetries(0))
	request := endless(t, model)
	request.MaxTokens = magistral.Int(200)
	start := time.Now()
	_, err := client.Chat.Complete(context.Background(), request)
	var connErr *magistral.ConnectionError
	if !errors.As(err, &connErr) || !errors.Is(err, magistral.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
	waitIdle(t, 10*time.Second)
}

func TestServerUsageInvoiceAndAccount(t *testing.T) {
	client, model := serverClient(t)
	ctx := context.Background()
	before, err := client.Usage.Invoice(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	response, err := client.Chat.Complete(ctx, hello(model, 4))
	if err != nil {
		t.Fatal(err)
	}
	after, err := client.Usage.Invoice(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if after.Month != time.Now().UTC().Format("2006-01") || after.TotalTokens < before.TotalTokens+int64(response.Usage.TotalTokens) ||
		after.TotalMicroUSD <= before.TotalMicroUSD || len(after.Lines) == 0 || after.Object != "invoice" {
		t.Fatalf("invoice before %+v, after %+v, usage %+v", before, after, response.Usage)
	}
	report, err := client.Usage.Get(ctx, magistral.UsageParams{GroupBy: "model"})
	if err != nil {
		t.Fatal(err)
	}
	var tokens int64
	for _, entry := range report.Data {
		if entry.Model == "" || entry.Requests <= 0 || entry.CostUSD == "" {
			t.Fatalf("entry %+v", entry)
		}
		tokens += entry.TotalTokens
	}
	if report.GroupBy != "model" || report.Account != after.Account || tokens != after.TotalTokens {
		t.Fatalf("report %+v, invoice %+v", report, after)
	}
	account, err := client.Usage.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if account.Account != after.Account || account.Limits.RequestsPerMinute <= 0 || account.Key.Prefix == "" ||
		!strings.HasPrefix(os.Getenv("MAGISTRAL_API_KEY"), account.Key.Prefix) {
		t.Fatalf("account %+v", account)
	}
	_, err = client.Usage.Invoice(ctx, "2020-13")
	var apiErr *magistral.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "month" {
		t.Fatalf("month 2020-13: %v", err)
	}
}
