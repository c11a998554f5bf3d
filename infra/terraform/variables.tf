variable "region" {
  description = "AWS region of the streams and the table."
  type        = string
}

variable "prefix" {
  description = "Stream name prefix: topic T is the Kinesis stream <prefix>-T."
  type        = string
  default     = "heartline"
}

variable "table" {
  description = "DynamoDB table for topology, leases, checkpoints and failover records."
  type        = string
  default     = "heartline"
}

variable "shard_counts" {
  description = "Kinesis shards per topic. Heartbeats: about 1 shard per 1,000 Redis shards at 4 heartbeats/s with 2 agents (1,000 records/s per shard)."
  type        = map(number)
  default = {
    heartbeats = 2
    alerts     = 1
    failovers  = 1
    chaos      = 1
    deadletter = 1
  }
}

variable "retention_hours" {
  description = "How long the streams keep records (lazarus events reads the failover history from there)."
  type        = number
  default     = 168
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = { "app" = "heartline" }
}
