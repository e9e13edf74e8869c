package magistral

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Chunk is one part of a message's content: text, an image, or a thinking chunk (the model's
// reasoning trace, itself a list of text chunks).
type Chunk struct {
	Type     string  // "text", "image_url" or "thinking"
	Text     string  // of a text chunk
	ImageURL string  // of an image_url chunk: an http(s) or data: URL
	Detail   string  // of an image_url chunk, optional ("auto", "low", "high")
	Thinking []Chunk // of a thinking chunk: its text chunks
	Closed   *bool   // of a thinking chunk: whether the trace was finished
}

// TextChunk is a text content chunk.
func TextChunk(text string) Chunk { return Chunk{Type: "text", Text: text} }

// ImageChunk is an image content chunk; url is an http(s) or data: URL (see ImageURL).
func ImageChunk(url string) Chunk { return Chunk{Type: "image_url", ImageURL: url} }

// ThinkingChunk is a thinking chunk holding text, e.g. to send a reasoning trace back.
func ThinkingChunk(text string) Chunk {
	return Chunk{Type: "thinking", Thinking: []Chunk{TextChunk(text)}}
}

// MarshalJSON writes only the fields of the chunk's type, so an empty text is still sent.
func (c Chunk) MarshalJSON() ([]byte, error) {
	out := map[string]interface{}{"type": c.Type}
	switch c.Type {
	case "text":
		out["text"] = c.Text
	case "image_url":
		out["image_url"] = c.ImageURL
		if c.Detail != "" {
			out["image_url"] = map[string]string{"url": c.ImageURL, "detail": c.Detail}
		}
	case "thinking":
		thinking := c.Thinking
		if thinking == nil {
			thinking = []Chunk{}
		}
		out["thinking"] = thinking
		if c.Closed != nil {
			out["closed"] = *c.Closed
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads both forms of image_url: a string or {"url", "detail"}.
func (c *Chunk) UnmarshalJSON(data []byte) error {
	var raw struct {
		Type     string          `json:"type"`
		Text     string          `json:"text"`
		ImageURL json.RawMessage `json:"image_url"`
		Thinking []Chunk         `json:"thinking"`
		Closed   *bool           `json:"closed"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*c = Chunk{Type: raw.Type, Text: raw.Text, Thinking: raw.Thinking, Closed: raw.Closed}
	if len(raw.ImageURL) > 0 && json.Unmarshal(raw.ImageURL, &c.ImageURL) != nil {
		var object struct{ URL, Detail string }
		if err := json.Unmarshal(raw.ImageURL, &object); err != nil {
			return err
		}
		c.ImageURL, c.Detail = object.URL, object.Detail
	}
	return nil
}

// splitChunks returns the text and the thinking of a list of chunks.
func splitChunks(chunks []Chunk) (text, thinking string) {
	var t, th strings.Builder
	for _, chunk := range chunks {
		switch chunk.Type {
		case "text":
			t.WriteString(chunk.Text)
		case "thinking":
			for _, inner := range chunk.Thinking {
				th.WriteString(inner.Text)
			}
		}
	}
	return t.String(), th.String()
}

// Message is one turn of a conversation. Content is sent as a string unless Chunks is set.
type Message struct {
	Role       string // "system", "user", "assistant" or "tool"
	Content    string
	Chunks     []Chunk
	ToolCalls  []ToolCall // an assistant's calls
	ToolCallID string     // a tool message: the call it answers
	Name       string     // a tool message: the function's name
	Prefix     bool       // an assistant message the answer must continue
	// ReasoningContent is the reasoning trace of answers in the OpenAI style, which some
	// servers send instead of thinking chunks.
	ReasoningContent string
}

// SystemMessage is a system message with text content.
func SystemMessage(text string) Message { return Message{Role: "system", Content: text} }

// AssistantMessage is an assistant message with text content (history, or a prefix).
func AssistantMessage(text string) Message { return Message{Role: "assistant", Content: text} }

// ToolMessage is a tool's result for the call callID of function name.
func ToolMessage(callID, name, content string) Message {
	return Message{Role: "tool", ToolCallID: callID, Name: name, Content: content}
}

// Text is the answer: the message's text, without its thinking.
func (m Message) Text() string {
	if m.Chunks == nil {
		return m.Content
	}
	text, _ := splitChunks(m.Chunks)
	return text
}

// Thinking is the reasoning trace: the thinking chunks' text, or ReasoningContent.
func (m Message) Thinking() string {
	if m.Chunks == nil {
		return m.ReasoningContent
	}
	_, thinking := splitChunks(m.Chunks)
	return thinking + m.ReasoningContent
}

type messageJSON struct {
	Role             string          `json:"role"`
	Content          json.RawMessage `json:"content"`
	ToolCalls        []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID       string          `json:"tool_call_id,omitempty"`
	Name             string          `json:"name,omitempty"`
	Prefix           bool            `json:"prefix,omitempty"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
}

func (m Message) MarshalJSON() ([]byte, error) {
	var content interface{} = m.Content
	if m.Chunks != nil {
		content = m.Chunks
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	return json.Marshal(messageJSON{Role: m.Role, Content: raw, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID,
		Name: m.Name, Prefix: m.Prefix, ReasoningContent: m.ReasoningContent})
}

// UnmarshalJSON reads content as a string, null or a list of chunks.
func (m *Message) UnmarshalJSON(data []byte) error {
	var raw messageJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*m = Message{Role: raw.Role, ToolCalls: raw.ToolCalls, ToolCallID: raw.ToolCallID, Name: raw.Name,
		Prefix: raw.Prefix, ReasoningContent: raw.ReasoningContent}
	if len(raw.Content) > 0 && string(raw.Content) != "null" && json.Unmarshal(raw.Content, &m.Content) != nil {
		return json.Unmarshal(raw.Content, &m.Chunks)
	}
	return nil
}

// ToolCall is a function call the model asked for; Arguments is a JSON string.
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
	Index    *int         `json:"index,omitempty"` // in streams: which call a delta belongs to
}

// FunctionCall names the function and carries its arguments as a JSON string.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tool is a function the model may call.
type Tool struct {
	Type     string   `json:"type"`
	Function Function `json:"function"`
}

// Function describes a tool's function; Parameters is a JSON schema (any value json.Marshal takes).
type Function struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Parameters  interface{} `json:"parameters,omitempty"`
}

// FunctionTool is a function tool.
func FunctionTool(name, description string, parameters interface{}) Tool {
	return Tool{Type: "function", Function: Function{Name: name, Description: description, Parameters: parameters}}
}

// ToolChoiceFunction forces a call of the named function (ChatRequest.ToolChoice).
func ToolChoiceFunction(name string) interface{} {
	return map[string]interface{}{"type": "function", "function": map[string]string{"name": name}}
}

// ResponseFormat asks for plain text, any JSON object, or JSON following a schema.
type ResponseFormat struct {
	Type       string      `json:"type"` // "text", "json_object" or "json_schema"
	JSONSchema *JSONSchema `json:"json_schema,omitempty"`
}

// JSONSchema is the schema of a json_schema response format.
type JSONSchema struct {
	Name   string      `json:"name"`
	Schema interface{} `json:"schema"`
	Strict *bool       `json:"strict,omitempty"`
}

// ChatRequest is a chat completion request. Pointer fields are optional: nil leaves them out, so
// the server's defaults apply (Float, Int and Bool make pointers).
type ChatRequest struct {
	Model             string          `json:"model"`
	Messages          []Message       `json:"messages"`
	Temperature       *float64        `json:"temperature,omitempty"`
	TopP              *float64        `json:"top_p,omitempty"`
	MaxTokens         *int            `json:"max_tokens,omitempty"`
	Stop              []string        `json:"stop,omitempty"`
	RandomSeed        *int            `json:"random_seed,omitempty"`
	ResponseFormat    *ResponseFormat `json:"response_format,omitempty"`
	Tools             []Tool          `json:"tools,omitempty"`
	ToolChoice        interface{}     `json:"tool_choice,omitempty"` // "auto", "none", "any", "required" or ToolChoiceFunction
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	PresencePenalty   *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty,omitempty"`
	N                 *int            `json:"n,omitempty"`
	PromptMode        *string         `json:"prompt_mode,omitempty"` // "reasoning"
	SafePrompt        bool            `json:"safe_prompt,omitempty"`
	// Extra holds any other field, sent as given: e.g. "logit_bias", or "prompt_mode": nil for
	// an explicit null (no reasoning system prompt), which a nil PromptMode cannot say.
	Extra map[string]interface{} `json:"-"`
}

// Float, Int and Bool return pointers for ChatRequest's optional fields.
func Float(v float64) *float64 { return &v }

// Int returns a pointer to v.
func Int(v int) *int { return &v }

// Bool returns a pointer to v.
func Bool(v bool) *bool { return &v }

// body is the JSON object sent: the fields, then Extra, then stream.
func (r ChatRequest) body(stream bool) (map[string]json.RawMessage, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, err
	}
	for key, value := range r.Extra {
		if body[key], err = json.Marshal(value); err != nil {
			return nil, fmt.Errorf("extra field %q: %w", key, err)
		}
	}
	if stream {
		body["stream"] = json.RawMessage("true")
	}
	return body, nil
}

// Usage counts a request's tokens; image tokens are prompt tokens, thinking tokens completion tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Choice is one of a response's answers (one unless the request set N).
type Choice struct {
	Index        int     `json:"index"`
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason"` // stop, length, model_length, tool_calls, error
}

// ChatResponse is a whole chat completion. Raw is the body as the server sent it.
type ChatResponse struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Usage   Usage           `json:"usage"`
	Choices []Choice        `json:"choices"`
	Raw     json.RawMessage `json:"-"`
}

// Message is the first choice's message.
func (r *ChatResponse) Message() Message {
	if len(r.Choices) == 0 {
		return Message{}
	}
	return r.Choices[0].Message
}

// Text is the first choice's answer, without its thinking.
func (r *ChatResponse) Text() string { return r.Message().Text() }

// Thinking is the first choice's reasoning trace ("" when the model did not think).
func (r *ChatResponse) Thinking() string { return r.Message().Thinking() }

// ToolCalls are the first choice's tool calls.
func (r *ChatResponse) ToolCalls() []ToolCall { return r.Message().ToolCalls }

// FinishReason is why the first choice ended.
func (r *ChatResponse) FinishReason() string {
	if len(r.Choices) == 0 {
		return ""
	}
	return r.Choices[0].FinishReason
}

// ChatService is the chat completions API (client.Chat).
type ChatService struct{ client *Client }

// Complete sends a chat completion request and returns the whole answer.
func (s *ChatService) Complete(ctx context.Context, request ChatRequest) (*ChatResponse, error) {
	body, err := request.body(false)
	if err != nil {
		return nil, fmt.Errorf("magistral: encoding the request: %w", err)
	}
	data, _, err := s.client.send(ctx, "POST", "/v1/chat/completions", body, false)
	if err != nil {
		return nil, err
	}
	response := &ChatResponse{Raw: data}
	if err := json.Unmarshal(data, response); err != nil {
		return nil, fmt.Errorf("magistral: decoding the chat completion: %w", err)
	}
	return response, nil
}

// Stream sends a chat completion request with stream: true and returns its events as they
// arrive. It is retried (429, 5xx, connection errors) only until the server starts answering.
// Close the stream when done; cancelling ctx also ends it and closes the connection.
func (s *ChatService) Stream(ctx context.Context, request ChatRequest) (*Stream, error) {
	body, err := request.body(true)
	if err != nil {
		return nil, fmt.Errorf("magistral: encoding the request: %w", err)
	}
	_, resp, err := s.client.send(ctx, "POST", "/v1/chat/completions", body, true)
	if err != nil {
		return nil, err
	}
	return newStream(ctx, resp), nil
}
