module github.com/magistral/magistral-go

go 1.19
