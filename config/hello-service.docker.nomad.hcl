# hello-service with the docker driver: the same blue/green job as
# hello-service.nomad.hcl, for Nomad clients without raw_exec. The version
# picks the image: each group runs `<image_repo>:<its meta.version>` (Nomad
# interpolates `${NOMAD_META_version}` in the task config when it starts the
# task), so `switchyard deploy v4` runs the `v4` image in the standby group.
# Every tag must contain the `hello-service` binary as its entrypoint; choose
# the repository with
#   nomad job run -var image_repo=registry.example.com/hello-service hello-service.docker.nomad.hcl
#
# The container listens on the dynamic host port Nomad assigns (docker
# `ports = ["http"]` maps it 1:1 because the port has no `to`), and binds
# 0.0.0.0 inside the container so the mapping can reach it.

variable "image_repo" {
  type    = string
  default = "hello-service"
}

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
      driver = "docker"

      config {
        image = "${var.image_repo}:${NOMAD_META_version}"
        ports = ["http"]
        args  = ["--listen", "0.0.0.0", "--port", "${NOMAD_PORT_http}", "--version", "${NOMAD_META_version}"]
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
      driver = "docker"

      config {
        image = "${var.image_repo}:${NOMAD_META_version}"
        ports = ["http"]
        args  = ["--listen", "0.0.0.0", "--port", "${NOMAD_PORT_http}", "--version", "${NOMAD_META_version}"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
