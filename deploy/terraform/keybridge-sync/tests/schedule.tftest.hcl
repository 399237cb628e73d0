# schedule_expression for many names against `keybridge-sync schedule` (the expected map comes
# from the real binary: tests/integration/test_terraform.py writes it to a .tfvars.json file).
mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

run "schedule_matches_binary_interval_15" {
  command = plan
  module {
    source = "./tests/many"
  }
  variables {
    apps = keys(var.expected_schedules)
  }
  assert {
    condition     = length(var.expected_schedules) >= 200
    error_message = "expected at least 200 names from keybridge-sync schedule"
  }
  assert {
    condition     = output.schedules == var.expected_schedules
    error_message = "schedule_expression differs from keybridge-sync schedule: ${jsonencode({ for k, v in output.schedules : k => [v, var.expected_schedules[k]] if v != var.expected_schedules[k] })}"
  }
  assert {
    condition     = alltrue([for n in values(output.function_names) : can(regex("^[A-Za-z0-9_-]{1,56}$", n))])
    error_message = "a derived function name is not a valid Lambda name of at most 56 characters"
  }
  assert {
    condition     = length(distinct(values(output.function_names))) == length(output.function_names)
    error_message = "two applications got the same function name"
  }
}

run "schedule_matches_binary_interval_5" {
  command = plan
  module {
    source = "./tests/many"
  }
  variables {
    apps     = keys(var.expected_schedules_5)
    interval = 5
  }
  assert {
    condition     = length(var.expected_schedules_5) > 0 && output.schedules == var.expected_schedules_5
    error_message = "interval 5: schedule_expression differs from keybridge-sync schedule --interval 5"
  }
}

run "schedule_matches_binary_interval_60" {
  command = plan
  module {
    source = "./tests/many"
  }
  variables {
    apps     = keys(var.expected_schedules_60)
    interval = 60
  }
  assert {
    condition     = length(var.expected_schedules_60) > 0 && output.schedules == var.expected_schedules_60
    error_message = "interval 60: schedule_expression differs from keybridge-sync schedule --interval 60"
  }
}
