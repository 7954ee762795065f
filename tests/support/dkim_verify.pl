#!/usr/bin/perl
# The independent DKIM verifier of the tests: Perl's Mail::DKIM (Debian's libmail-dkim-perl).
# Reads one message on stdin, fetches public keys from the DNS server at 127.0.0.1:PORT, and
# prints one line per DKIM-Signature: "<result> d=<domain> s=<selector> a=<algorithm> <detail>",
# or "none" when the message carries no signature.
use strict;
use warnings;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my $port = shift or die "usage: dkim_verify.pl DNS_PORT < message\n";
Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(
        nameservers => ['127.0.0.1'], port => $port, recurse => 1,
        tcp_timeout => 5, udp_timeout => 5, retry => 2,
    )
);
binmode STDIN;
my $verifier = Mail::DKIM::Verifier->new();
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z//;
    $verifier->PRINT("$line\015\012");
}
$verifier->CLOSE;
my @signatures = $verifier->signatures;
print "none\n" unless @signatures;
for my $signature (@signatures) {
    printf "%s d=%s s=%s a=%s %s\n", $signature->result, $signature->domain,
        $signature->selector, $signature->algorithm, $signature->result_detail // '';
}
