#include "vmm/netns.h"

#include <gtest/gtest.h>

#include "vmm/qemu_cmdline.h"

namespace forkd::vmm {
namespace {

TEST(AllowRule, ParsesAddressPrefixAndPort) {
  auto a = parse_allow_rule("10.1.2.3");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->prefix, 32);
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(a->text(), "10.1.2.3");
  auto b = parse_allow_rule("192.168.7.9/16:443");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->text(), "192.168.0.0/16:443");  // masked to its prefix
  auto c = parse_allow_rule("0.0.0.0/0:53");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text(), "0.0.0.0/0:53");
}

TEST(AllowRule, RefusesWhatIsNotAnAddress) {
  for (const char* bad :
       {"", "example.com:443", "10.0.0", "10.0.0.1.2", "10.0.0.256", "10.0.0.1/33", "10.0.0.1:0",
        "10.0.0.1:65536", "10.0.0.1:", "10.0.0.1/", "-1.0.0.1", "010.0.0.1", "10.0.0.1 ",
        "10.0.0.1:80;drop", "10.0.0.1\"", "1.2.3.4/8/8", "::1"}) {
    auto r = parse_allow_rule(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    }
  }
  std::vector<std::string> many(kMaxAllowRules + 1, "10.0.0.1");
  EXPECT_FALSE(parse_allow_list(many));
}

TEST(NetnsAddresses, EachSlotIsItsOwnSlash30) {
  auto a = netns_addresses(0);
  EXPECT_EQ(a.host_address, "10.200.0.1");
  EXPECT_EQ(a.address, "10.200.0.2");
  EXPECT_EQ(a.host_if, "fkh0");
  auto b = netns_addresses(kNetnsSlots - 1);
  EXPECT_EQ(b.host_address, "10.200.255.253");
  EXPECT_EQ(b.address, "10.200.255.254");
  EXPECT_LE(b.host_if.size(), 15u);  // IFNAMSIZ
  EXPECT_EQ(netns_addresses(64).address, "10.200.1.2");
}

TEST(NetnsRuleset, OpenWithoutAllowList) {
  NetnsSpec spec;
  spec.expose = {8000};
  spec.nameserver = "192.0.2.53";
  auto rules = netns_ruleset(spec, netns_addresses(3));
  EXPECT_NE(rules.find("ip daddr 10.200.0.14 tcp dport 8000 dnat to 10.0.2.15:8000"),
            std::string::npos)
      << rules;
  EXPECT_NE(rules.find("ip daddr { 10.0.2.2, 10.0.2.3 } udp dport 53 dnat to 192.0.2.53:53"),
            std::string::npos);
  EXPECT_NE(rules.find("ether daddr 52:55:0a:00:02:03 ether daddr set 52:55:0a:00:02:02"),
            std::string::npos);
  EXPECT_NE(rules.find("oifname \"veth0\" masquerade"), std::string::npos);
  EXPECT_NE(rules.find("iifname \"tap0\" oifname \"veth0\" accept"), std::string::npos);
  EXPECT_EQ(rules.find("reject"), std::string::npos);
}

TEST(NetnsRuleset, AllowListAcceptsOnlyItsEntries) {
  NetnsSpec spec;
  spec.allow = {*parse_allow_rule("10.200.0.13:8080"), *parse_allow_rule("198.51.100.0/24")};
  auto rules = netns_ruleset(spec, netns_addresses(3));
  EXPECT_NE(rules.find("ip daddr 10.200.0.13 tcp dport 8080 accept"), std::string::npos) << rules;
  EXPECT_NE(rules.find("ip daddr 10.200.0.13 udp dport 8080 accept"), std::string::npos);
  EXPECT_NE(rules.find("ip daddr 198.51.100.0/24 accept"), std::string::npos);
  EXPECT_NE(rules.find("oifname \"veth0\" reject"), std::string::npos);
  EXPECT_EQ(rules.find("oifname \"veth0\" accept"), std::string::npos);
  EXPECT_EQ(rules.find("dport 53 dnat"), std::string::npos);  // no resolver given
}

TEST(NetnsNameserver, SkipsLoopbackAndJunk) {
  EXPECT_EQ(first_routable_nameserver("# x\nnameserver 127.0.0.53\nnameserver bogus\n"
                                      "nameserver 10.9.8.7\nnameserver 1.1.1.1\n"),
            "10.9.8.7");
  EXPECT_EQ(first_routable_nameserver("nameserver 127.0.0.1\nsearch lan\n"), "");
  EXPECT_EQ(first_routable_nameserver(""), "");
}

TEST(NetnsCmdline, TapNicKeepsAnUnconnectedSlirpForTheDeviceState) {
  VmConfig cfg;
  cfg.kernel = "/k";
  cfg.nic = true;
  cfg.nic_tap = kNetnsTap;
  auto argv = build_qemu_argv(cfg);
  std::string all;
  for (const auto& a : argv) all += a + " ";
  EXPECT_NE(all.find("tap,id=net0,ifname=tap0,vnet_hdr=off,script=no,downscript=no"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("user,id=slirpsink,restrict=on"), std::string::npos);
  EXPECT_NE(all.find("netdev=net0"), std::string::npos);
}

}  // namespace
}  // namespace forkd::vmm
