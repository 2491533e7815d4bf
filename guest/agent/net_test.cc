#include "net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace forkd::agent {
namespace {

uint32_t ip(const char* s) {
  in_addr a{};
  EXPECT_EQ(::inet_pton(AF_INET, s, &a), 1);
  return a.s_addr;
}

TEST(NetSpec, OutboundParses) {
  auto n = parse_net_spec(Json{{"mode", "outbound"},
                               {"address", "10.0.2.15/24"},
                               {"gateway", "10.0.2.2"},
                               {"dns", "10.0.2.3"}});
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_TRUE(n->outbound);
  EXPECT_EQ(n->address, ip("10.0.2.15"));
  EXPECT_EQ(n->prefix, 24);
  EXPECT_EQ(n->gateway, ip("10.0.2.2"));
  EXPECT_EQ(n->dns, ip("10.0.2.3"));
}

TEST(NetSpec, DefaultIsTheUserModeNetwork) {
  NetSpec d = default_outbound();
  EXPECT_TRUE(d.outbound);
  EXPECT_EQ(d.address, ip("10.0.2.15"));
  EXPECT_EQ(d.gateway, ip("10.0.2.2"));
  EXPECT_EQ(d.dns, ip("10.0.2.3"));
}

TEST(NetSpec, NoneNeedsNothingElse) {
  auto n = parse_net_spec(Json{{"mode", "none"}});
  ASSERT_TRUE(n);
  EXPECT_FALSE(n->outbound);
}

TEST(NetSpec, DnsIsOptional) {
  auto n = parse_net_spec(
      Json{{"mode", "outbound"}, {"address", "192.168.7.9/16"}, {"gateway", "192.168.0.1"}});
  ASSERT_TRUE(n);
  EXPECT_EQ(n->dns, 0u);
  EXPECT_EQ(n->prefix, 16);
}

TEST(NetSpec, RejectsWhatAHostileOrBuggyHostCouldSend) {
  const Json bad[] = {
      Json::array(),
      Json{{"mode", 3}},
      Json{{"mode", "bridge"}},
      Json{{"mode", "outbound"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/33"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/0"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/2x"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.315/24"}, {"gateway", "10.0.2.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/24"}, {"gateway", "10.0.3.2"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/24"}, {"gateway", "10.0.2.15"}},
      Json{{"mode", "outbound"}, {"address", "10.0.2.15/24"}, {"gateway", 7}},
      Json{{"mode", "outbound"},
           {"address", "10.0.2.15/24"},
           {"gateway", "10.0.2.2"},
           {"dns", "resolver"}},
      Json{{"mode", "outbound"},
           {"address", std::string(5000, '1') + "/24"},
           {"gateway", "10.0.2.2"}},
  };
  for (const Json& j : bad) {
    auto n = parse_net_spec(j);
    EXPECT_FALSE(n) << j.dump();
  }
}

}  // namespace
}  // namespace forkd::agent
