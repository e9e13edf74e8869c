package magistral_test

// Tests against a real `magistral serve` of a vision and reasoning model (a tiny random-weight
// Mistral 3): MAGISTRAL_VISION_BASE_URL, MAGISTRAL_VISION_API_KEY, MAGISTRAL_VISION_MODEL, and
// MAGISTRAL_TEST_THINK_BIAS, a logit_bias (JSON) that makes the model open a [THINK] span.

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	magistral "github.com/magistral/magistral-go"
)

func visionClient(t *testing.T) (*magistral.Client, string) {
	t.Helper()
	url, key, model := os.Getenv("MAGISTRAL_VISION_BASE_URL"), os.Getenv("MAGISTRAL_VISION_API_KEY"), os.Getenv("MAGISTRAL_VISION_MODEL")
	if url == "" || key == "" || model == "" {
		t.Skip("MAGISTRAL_VISION_BASE_URL, MAGISTRAL_VISION_API_KEY and MAGISTRAL_VISION_MODEL name no vision server")
	}
	return magistral.NewClient(key, magistral.WithBaseURL(url)), model
}

func picture(width, height int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	for x := 0; x < width; x++ {
		for y := 0; y < height; y++ {
			img.Set(x, y, color.RGBA{R: 200, G: uint8(10 * y), B: 30, A: 255})
		}
	}
	return img
}

func TestVisionImagesFromAFileAndBytesReachTheModel(t *testing.T) {
	client, model := visionClient(t)
	var encoded bytes.Buffer
	if err := png.Encode(&encoded, picture(40, 24)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "red.png")
	if err := os.WriteFile(path, encoded.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := magistral.ImageURL(path)
	if err != nil {
		t.Fatal(err)
	}
	fromBytes := magistral.ImageFromBytes(encoded.Bytes())
	if fromFile != fromBytes || !strings.HasPrefix(fromFile, "data:image/png;base64,") {
		t.Fatalf("file %.40s, bytes %.40s", fromFile, fromBytes)
	}
	ask := func(images ...string) *magistral.ChatResponse {
		t.Helper()
		message, err := magistral.UserMessage("What is this?", images...)
		if err != nil {
			t.Fatal(err)
		}
		response, err := client.Chat.Complete(context.Background(), magistral.ChatRequest{Model: model,
			Messages: []magistral.Message{message}, MaxTokens: magistral.Int(4), Temperature: magistral.Float(0)})
		if err != nil {
			t.Fatal(err)
		}
		return response
	}
	textOnly, onePath, twoImages := ask(), ask(path), ask(path, fromBytes)
	// 40×24 pixels in patches of 4 merged 2×2: 5×3 image tokens, plus row breaks and the end
	perImage := onePath.Usage.PromptTokens - textOnly.Usage.PromptTokens
	t.Logf("prompt tokens: text %d, one image %d, two %d", textOnly.Usage.PromptTokens,
		onePath.Usage.PromptTokens, twoImages.Usage.PromptTokens)
	if perImage < 15 || twoImages.Usage.PromptTokens != textOnly.Usage.PromptTokens+2*perImage || onePath.FinishReason() == "" {
		t.Fatal("an image is not counted as expected")
	}
	if _, err := magistral.UserMessage("What is this?", filepath.Join(t.TempDir(), "missing.png")); err == nil {
		t.Fatal("a missing file made a message")
	}
}

func TestVisionThinkingWholeAndStreamed(t *testing.T) {
	client, model := visionClient(t)
	var bias map[string]float64
	if err := json.Unmarshal([]byte(os.Getenv("MAGISTRAL_TEST_THINK_BIAS")), &bias); err != nil {
		t.Skipf("MAGISTRAL_TEST_THINK_BIAS: %v", err)
	}
	ctx := context.Background()
	for _, format := range []string{"mistral", "openai"} { // thinking chunks, or reasoning_content
		request := magistral.ChatRequest{Model: model, MaxTokens: magistral.Int(8), Temperature: magistral.Float(0),
			Messages: []magistral.Message{{Role: "user", Content: "What is the weather in Paris?"}},
			Extra:    map[string]interface{}{"logit_bias": bias, "reasoning_format": format}}
		response, err := client.Chat.Complete(ctx, request)
		if err != nil {
			t.Fatal(err)
		}
		message := response.Message()
		if response.Thinking() == "" || (format == "mistral") != (message.Chunks != nil) ||
			(format == "openai") != (message.ReasoningContent != "") {
			t.Fatalf("%s: no thinking apart from the text in %s", format, response.Raw)
		}
		t.Logf("%s: thinking %q, text %q", format, response.Thinking(), response.Text())
		stream, err := client.Chat.Stream(ctx, request)
		if err != nil {
			t.Fatal(err)
		}
		var thinking, text strings.Builder
		var end magistral.Event
		for _, event := range collect(t, stream) {
			switch event.Kind {
			case magistral.EventThinking:
				thinking.WriteString(event.Text)
			case magistral.EventText:
				text.WriteString(event.Text)
			case magistral.EventEnd:
				end = event
			}
		}
		if thinking.String() != response.Thinking() || text.String() != response.Text() ||
			end.Usage == nil || end.Usage.CompletionTokens != response.Usage.CompletionTokens {
			t.Fatalf("%s: streamed thinking %q, text %q, end %+v; whole %s", format, thinking.String(),
				text.String(), end, response.Raw)
		}
	}
}

func TestImageMIMETypes(t *testing.T) {
	var encoded bytes.Buffer
	if err := jpeg.Encode(&encoded, picture(8, 8), nil); err != nil {
		t.Fatal(err)
	}
	if url := magistral.ImageFromBytes(encoded.Bytes()); !strings.HasPrefix(url, "data:image/jpeg;base64,") {
		t.Fatalf("jpeg: %.30s", url)
	}
	// a file's extension names its type; without a known one, its bytes do
	dir := t.TempDir()
	for name, want := range map[string]string{"a.jpg": "image/jpeg", "b.JPEG": "image/jpeg", "c.bin": "image/jpeg"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, encoded.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if url, err := magistral.ImageFromFile(path); err != nil || !strings.HasPrefix(url, "data:"+want+";base64,") {
			t.Fatalf("%s: %.30s, %v", name, url, err)
		}
	}
	for _, url := range []string{"https://example.com/a.png", "http://example.com/a.webp", "data:image/gif;base64,R0lG"} {
		if got, err := magistral.ImageURL(url); got != url || err != nil {
			t.Fatalf("%s became %s, %v", url, got, err)
		}
	}
}
