module github.com/heartline/heartline/services/alerter

go 1.26.0

require github.com/heartline/heartline/shared v0.0.0

replace github.com/heartline/heartline/shared => ../../shared
