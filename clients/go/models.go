package magistral

import (
	"context"
	"net/url"
)

// Model is a model card of GET /v1/models.
type Model struct {
	ID                      string       `json:"id"`
	Object                  string       `json:"object"`
	Created                 int64        `json:"created"`
	OwnedBy                 string       `json:"owned_by"`
	Name                    string       `json:"name"`
	Description             string       `json:"description"`
	MaxContextLength        int          `json:"max_context_length"`
	Aliases                 []string     `json:"aliases"`
	Deprecation             *string      `json:"deprecation"`
	DefaultModelTemperature *float64     `json:"default_model_temperature"`
	Type                    string       `json:"type"`
	Capabilities            Capabilities `json:"capabilities"`
}

// Capabilities says what a model can do.
type Capabilities struct {
	CompletionChat  bool `json:"completion_chat"`
	FunctionCalling bool `json:"function_calling"`
	Reasoning       bool `json:"reasoning"`
	Vision          bool `json:"vision"`
	CompletionFIM   bool `json:"completion_fim"`
	FineTuning      bool `json:"fine_tuning"`
	Classification  bool `json:"classification"`
	OCR             bool `json:"ocr"`
	Moderation      bool `json:"moderation"`
	Audio           bool `json:"audio"`
	Embeddings      bool `json:"embeddings"` // magistral's embedding models
}

// ModelsService is the models API (client.Models).
type ModelsService struct{ client *Client }

// List returns the served models' cards.
func (s *ModelsService) List(ctx context.Context) ([]Model, error) {
	var list struct {
		Data []Model `json:"data"`
	}
	if err := s.client.getJSON(ctx, "GET", "/v1/models", nil, &list); err != nil {
		return nil, err
	}
	return list.Data, nil
}

// Retrieve returns one model's card; an alias gives the card of the model it names.
func (s *ModelsService) Retrieve(ctx context.Context, id string) (*Model, error) {
	var model Model
	if err := s.client.getJSON(ctx, "GET", "/v1/models/"+url.PathEscape(id), nil, &model); err != nil {
		return nil, err
	}
	return &model, nil
}
