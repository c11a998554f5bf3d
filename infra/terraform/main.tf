# The AWS profile of Heartline: one Kinesis stream per topic, the DynamoDB table that
# holds the topology, leases, checkpoints and failover records, and an IAM policy the
# services' roles attach. Services then run with
#
#   HEARTLINE_STREAM=kinesis://<prefix>?region=<region>&create=false
#   HEARTLINE_KV=dynamodb://<table>?region=<region>&create=false
#
# (create=false: resources come from here, not from the services).

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

locals {
  # Topics of shared/events, plus the dead-letter topic of shared/stream.
  topics = toset(["heartbeats", "alerts", "failovers", "chaos", "deadletter"])
}

resource "aws_kinesis_stream" "topic" {
  for_each         = local.topics
  name             = "${var.prefix}-${each.key}"
  shard_count      = lookup(var.shard_counts, each.key, 1)
  retention_period = var.retention_hours

  stream_mode_details {
    stream_mode = "PROVISIONED"
  }

  encryption_type = "KMS"
  kms_key_id      = "alias/aws/kinesis"

  tags = merge(var.tags, { "heartline:topic" = each.key })
}

resource "aws_dynamodb_table" "state" {
  name         = var.table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "ns"
  range_key    = "k"

  attribute {
    name = "ns"
    type = "S"
  }
  attribute {
    name = "k"
    type = "S"
  }

  # Tombstones of deleted keys expire on their own (dynamokv writes "expires").
  ttl {
    attribute_name = "expires"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  tags = var.tags
}

data "aws_iam_policy_document" "services" {
  statement {
    sid = "Streams"
    actions = [
      "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:ListShards",
      "kinesis:PutRecord", "kinesis:PutRecords", "kinesis:GetShardIterator", "kinesis:GetRecords",
    ]
    resources = [for s in aws_kinesis_stream.topic : s.arn]
  }
  statement {
    sid = "State"
    actions = [
      "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
      "dynamodb:Query", "dynamodb:Scan", "dynamodb:DescribeTable",
    ]
    resources = [aws_dynamodb_table.state.arn]
  }
}

resource "aws_iam_policy" "services" {
  name        = "${var.prefix}-services"
  description = "What Heartline's agents, alerter, lazarus, ratequeue and chaos need on the stream and the state table."
  policy      = data.aws_iam_policy_document.services.json
  tags        = var.tags
}
