# Consul ACL policy of the Nomad agents: register and deregister the
# allocations' services and checks through the local Consul agent, and read
# their health. This is Nomad's documented minimum for its Consul token.
#
#   consul acl policy create -name nomad-agent -rules @config/acl/consul-nomad-agent.hcl
#   consul acl token create -description "nomad agent" -policy-name nomad-agent
#   (then `consul { token = "..." }` in the Nomad agent configuration)
#
# `switchyard dev --secure` loads this very file for its dev Nomad's token.

service_prefix "" {
  policy = "write"
}
agent_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
