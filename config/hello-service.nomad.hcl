# hello-service: the blue/green demo job.
#
# Two task groups run side by side: `blue` and `green`. Only one of them is
# "active" at a time (it carries the `active` tag that the switchyard proxy
# routes to); the other one is the "standby" that receives the next version.
# A release replaces the whole standby group (its `meta.version` changes, which
# is a destructive update), waits for its checks to pass, then flips the tags
# (an in-place update: same allocations, same ports, no restart).
#
# Runs unchanged on a real Nomad client with the raw_exec driver enabled and
# `hello-service` on the PATH (`cargo install --path hello-service`, or a link
# named `hello-service` to the `switchyard` binary, which serves the demo when
# called by that name), and on switchyard's dev stack, which links
# `hello-service` to its own executable so nothing else needs building.

job "hello-service" {
  type        = "service"
  datacenters = ["dc1"]

  group "blue" {
    count = 2

    meta {
      version = "v1"
    }

    network {
      port "http" {}
    }

    # Leave the proxy time to drop an instance from its passing set before the
    # process receives SIGTERM.
    shutdown_delay = "1s"

    service {
      name = "hello-service"
      port = "http"
      tags = ["blue", "active", "version=${NOMAD_META_version}"]

      check {
        type     = "http"
        path     = "/health"
        interval = "1s"
        timeout  = "1s"
      }
    }

    # Replace a whole standby group at once and call it healthy quickly.
    update {
      max_parallel      = 2
      health_check      = "checks"
      min_healthy_time  = "1s"
      healthy_deadline  = "1m"
      progress_deadline = "2m"
    }

    restart {
      attempts = 3
      interval = "1m"
      delay    = "2s"
      mode     = "fail"
    }

    task "hello" {
      driver = "raw_exec"

      config {
        command = "hello-service"
        args    = ["--port", "${NOMAD_PORT_http}", "--version", "${NOMAD_META_version}"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }

  group "green" {
    count = 2

    meta {
      version = "v2"
    }

    network {
      port "http" {}
    }

    shutdown_delay = "1s"

    service {
      name = "hello-service"
      port = "http"
      tags = ["green", "standby", "version=${NOMAD_META_version}"]

      check {
        type     = "http"
        path     = "/health"
        interval = "1s"
        timeout  = "1s"
      }
    }

    update {
      max_parallel      = 2
      health_check      = "checks"
      min_healthy_time  = "1s"
      healthy_deadline  = "1m"
      progress_deadline = "2m"
    }

    restart {
      attempts = 3
      interval = "1m"
      delay    = "2s"
      mode     = "fail"
    }

    task "hello" {
      driver = "raw_exec"

      config {
        command = "hello-service"
        args    = ["--port", "${NOMAD_PORT_http}", "--version", "${NOMAD_META_version}"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
