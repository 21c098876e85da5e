package smtpcode

// fallback is what a code says when no rule decided.
type fallback struct {
	category Category
	scope    Scope
	rule     string
}

// enhancedDetails maps X.subject.detail to its meaning, after RFC 3463,
// RFC 5248 and the IANA registry names (see registry_data.go).
var enhancedDetails = map[[2]int]fallback{
	{0, 0}:  {Other, ScopeUnknown, "rfc3463-x.0.0"},
	{1, 0}:  {Other, ScopeRecipient, "rfc3463-x.1.0"},
	{1, 1}:  {UnknownUser, ScopeRecipient, "rfc3463-x.1.1"},
	{1, 2}:  {UnknownDomain, ScopeRecipient, "rfc3463-x.1.2"},
	{1, 3}:  {Syntax, ScopeRecipient, "rfc3463-x.1.3"},
	{1, 4}:  {UnknownUser, ScopeRecipient, "rfc3463-x.1.4"},
	{1, 5}:  {Other, ScopeRecipient, "rfc3463-x.1.5"},
	{1, 6}:  {UnknownUser, ScopeRecipient, "rfc3463-x.1.6"},
	{1, 7}:  {Syntax, ScopeSession, "rfc3463-x.1.7"},
	{1, 8}:  {UnknownDomain, ScopeSession, "rfc3463-x.1.8"},
	{1, 9}:  {Other, ScopeRecipient, "rfc3463-x.1.9"},
	{1, 10}: {UnknownDomain, ScopeRecipient, "rfc7505-x.1.10"},
	{2, 0}:  {Other, ScopeRecipient, "rfc3463-x.2.0"},
	{2, 1}:  {UnknownUser, ScopeRecipient, "rfc3463-x.2.1"},
	{2, 2}:  {MailboxFull, ScopeRecipient, "rfc3463-x.2.2"},
	{2, 3}:  {MessageSize, ScopeMessage, "rfc3463-x.2.3"},
	{2, 4}:  {Other, ScopeRecipient, "rfc3463-x.2.4"},
	{3, 0}:  {System, ScopeConnection, "rfc3463-x.3.0"},
	{3, 1}:  {System, ScopeConnection, "rfc3463-x.3.1"},
	{3, 2}:  {Congestion, ScopeConnection, "rfc3463-x.3.2"},
	{3, 3}:  {System, ScopeMessage, "rfc3463-x.3.3"},
	{3, 4}:  {MessageSize, ScopeMessage, "rfc3463-x.3.4"},
	{3, 5}:  {System, ScopeConnection, "rfc3463-x.3.5"},
	{3, 6}:  {Other, ScopeMessage, "rfc3463-x.3.6"},
	{4, 0}:  {Network, ScopeConnection, "rfc3463-x.4.0"},
	{4, 1}:  {Network, ScopeConnection, "rfc3463-x.4.1"},
	{4, 2}:  {Network, ScopeConnection, "rfc3463-x.4.2"},
	{4, 3}:  {System, ScopeConnection, "rfc3463-x.4.3"},
	{4, 4}:  {UnknownDomain, ScopeRecipient, "rfc3463-x.4.4"},
	{4, 5}:  {Congestion, ScopeConnection, "rfc3463-x.4.5"},
	{4, 6}:  {System, ScopeMessage, "rfc3463-x.4.6"},
	{4, 7}:  {Other, ScopeMessage, "rfc3463-x.4.7"},
	{5, 0}:  {Syntax, ScopeSession, "rfc3463-x.5.0"},
	{5, 1}:  {Syntax, ScopeSession, "rfc3463-x.5.1"},
	{5, 2}:  {Syntax, ScopeSession, "rfc3463-x.5.2"},
	{5, 3}:  {RateLimit, ScopeMessage, "rfc3463-x.5.3"},
	{5, 4}:  {Syntax, ScopeSession, "rfc3463-x.5.4"},
	{5, 5}:  {Syntax, ScopeSession, "rfc3463-x.5.5"},
	{5, 6}:  {Syntax, ScopeSession, "rfc4954-x.5.6"},
	{6, 0}:  {Syntax, ScopeMessage, "rfc3463-x.6.0"},
	{6, 1}:  {Syntax, ScopeMessage, "rfc3463-x.6.1"},
	{6, 2}:  {Syntax, ScopeMessage, "rfc3463-x.6.2"},
	{6, 3}:  {Syntax, ScopeMessage, "rfc3463-x.6.3"},
	{6, 4}:  {Other, ScopeMessage, "rfc3463-x.6.4"},
	{6, 5}:  {Syntax, ScopeMessage, "rfc3463-x.6.5"},
	{6, 6}:  {Other, ScopeMessage, "rfc4468-x.6.6"},
	{6, 7}:  {Syntax, ScopeMessage, "rfc6531-x.6.7"},
	{6, 8}:  {Syntax, ScopeMessage, "rfc6531-x.6.8"},
	{6, 9}:  {Syntax, ScopeMessage, "rfc6531-x.6.9"},
	{6, 10}: {Syntax, ScopeMessage, "rfc6531-x.6.10"},
	{7, 0}:  {Policy, ScopeSession, "rfc3463-x.7.0"},
	{7, 1}:  {Policy, ScopeSession, "rfc3463-x.7.1"},
	{7, 2}:  {Policy, ScopeRecipient, "rfc3463-x.7.2"},
	{7, 3}:  {Policy, ScopeMessage, "rfc3463-x.7.3"},
	{7, 4}:  {TLS, ScopeConnection, "rfc3463-x.7.4"},
	{7, 5}:  {TLS, ScopeConnection, "rfc3463-x.7.5"},
	{7, 6}:  {TLS, ScopeConnection, "rfc3463-x.7.6"},
	{7, 7}:  {Spam, ScopeMessage, "rfc3463-x.7.7"},
	{7, 8}:  {Credentials, ScopeSession, "rfc4954-x.7.8"},
	{7, 9}:  {Credentials, ScopeSession, "rfc4954-x.7.9"},
	{7, 10}: {TLS, ScopeConnection, "rfc5248-x.7.10"},
	{7, 11}: {TLS, ScopeConnection, "rfc4954-x.7.11"},
	{7, 12}: {Credentials, ScopeSession, "rfc4954-x.7.12"},
	{7, 13}: {UnknownUser, ScopeRecipient, "rfc5248-x.7.13"},
	{7, 14}: {Policy, ScopeSession, "rfc5248-x.7.14"},
	{7, 15}: {Policy, ScopeMessage, "rfc6710-x.7.15"},
	{7, 16}: {MessageSize, ScopeMessage, "rfc6710-x.7.16"},
	{7, 17}: {UnknownUser, ScopeRecipient, "rfc7293-x.7.17"},
	{7, 18}: {UnknownDomain, ScopeRecipient, "rfc7293-x.7.18"},
	{7, 19}: {Other, ScopeRecipient, "rfc7293-x.7.19"},
	{7, 20}: {Authentication, ScopeMessage, "rfc7372-x.7.20"},
	{7, 21}: {Authentication, ScopeMessage, "rfc7372-x.7.21"},
	{7, 22}: {Authentication, ScopeMessage, "rfc7372-x.7.22"},
	{7, 23}: {Authentication, ScopeMessage, "rfc7372-x.7.23"},
	{7, 24}: {Authentication, ScopeMessage, "rfc7372-x.7.24"},
	{7, 25}: {Policy, ScopeConnection, "rfc7372-x.7.25"},
	{7, 26}: {Authentication, ScopeMessage, "rfc7372-x.7.26"},
	{7, 27}: {UnknownDomain, ScopeSession, "rfc7505-x.7.27"},
	{7, 28}: {RateLimit, ScopeSession, "mailbomb-x.7.28"},
	{7, 29}: {Authentication, ScopeMessage, "rfc8617-x.7.29"},
	{7, 30}: {TLS, ScopeConnection, "rfc8689-x.7.30"},
}

// classSpecific refines a few codes whose meaning depends on the class:
// "421 4.3.2 All server ports are busy" is congestion, "550 5.3.2 Service
// currently unavailable" is Postfix postscreen refusing the client.
var classSpecific = map[EnhancedCode]fallback{
	{5, 3, 2}: {Policy, ScopeConnection, "rfc3463-5.3.2"},
}

// enhancedSubjects is the meaning of a subject when the detail is unknown
// (Microsoft's 4.7.650, 5.1.351, 4.4.318).
var enhancedSubjects = [8]fallback{
	{Other, ScopeUnknown, "rfc3463-x.0.x"},
	{Other, ScopeRecipient, "rfc3463-x.1.x"},
	{Other, ScopeRecipient, "rfc3463-x.2.x"},
	{System, ScopeConnection, "rfc3463-x.3.x"},
	{Other, ScopeConnection, "rfc3463-x.4.x"},
	{Syntax, ScopeSession, "rfc3463-x.5.x"},
	{Syntax, ScopeMessage, "rfc3463-x.6.x"},
	{Policy, ScopeSession, "rfc3463-x.7.x"},
}

// The maps above, read once into arrays so that classifying a reply costs
// no hashing: enhancedDetailIndex[key] is 1 + the index of the code's
// meaning in enhancedDetailList (0: none), and classSpecificKeys marks the
// keys classSpecific may hold.
var (
	enhancedDetailList  []fallback
	enhancedDetailIndex [enhKeys]uint16
	classSpecificKeys   [enhKeys / 64]uint64
)

func init() {
	for sd, f := range enhancedDetails {
		if sd[0] >= 0 && sd[0] < 8 && sd[1] >= 0 && sd[1] < 1000 {
			enhancedDetailList = append(enhancedDetailList, f)
			enhancedDetailIndex[enhKey(sd[0], sd[1])] = uint16(len(enhancedDetailList))
		}
	}
	for e := range classSpecific {
		k := enhKey(e.Subject, e.Detail)
		classSpecificKeys[k>>6] |= 1 << (k & 63)
	}
}

// enhancedDefault is the meaning of an enhanced code. X.0.0 says nothing,
// so it falls through to the basic code. class is the reply's class (from
// the basic code): class-specific meanings follow it, not the enhanced
// class, because the basic code is what RFC 5321 makes binding.
func enhancedDefault(e EnhancedCode, class int) (fallback, bool) {
	if e.IsZero() || !validClass(e.Class) || e.Subject < 0 || e.Subject > 7 {
		return fallback{}, false
	}
	if e.Subject == 0 && e.Detail == 0 {
		return fallback{}, false
	}
	if e.Detail >= 0 && e.Detail < 1000 {
		k := enhKey(e.Subject, e.Detail)
		if classSpecificKeys[k>>6]&(1<<(k&63)) != 0 {
			if f, ok := classSpecific[EnhancedCode{class, e.Subject, e.Detail}]; ok {
				return f, true
			}
		}
		if i := enhancedDetailIndex[k]; i > 0 {
			return enhancedDetailList[i-1], true
		}
	}
	if e.Subject == 0 {
		return fallback{}, false
	}
	return enhancedSubjects[e.Subject], true
}

// basicCodes is the meaning of a basic code (RFC 5321 4.2.2 and 4.2.3;
// RFC 4954 for AUTH; RFC 3207 for STARTTLS; RFC 7504 for 521 and 556).
var basicCodes = map[int]fallback{
	421: {Congestion, ScopeConnection, "rfc5321-421"},
	450: {Other, ScopeRecipient, "rfc5321-450"},
	451: {System, ScopeConnection, "rfc5321-451"},
	452: {System, ScopeConnection, "rfc5321-452"},
	454: {Other, ScopeSession, "rfc4954-454"},
	455: {Syntax, ScopeSession, "rfc5321-455"},
	500: {Syntax, ScopeSession, "rfc5321-500"},
	501: {Syntax, ScopeSession, "rfc5321-501"},
	502: {Syntax, ScopeSession, "rfc5321-502"},
	503: {Syntax, ScopeSession, "rfc5321-503"},
	504: {Syntax, ScopeSession, "rfc5321-504"},
	521: {UnknownDomain, ScopeRecipient, "rfc7504-521"},
	530: {Credentials, ScopeSession, "rfc4954-530"},
	534: {Credentials, ScopeSession, "rfc4954-534"},
	535: {Credentials, ScopeSession, "rfc4954-535"},
	538: {Credentials, ScopeSession, "rfc4954-538"},
	550: {Other, ScopeRecipient, "rfc5321-550"},
	551: {UnknownUser, ScopeRecipient, "rfc5321-551"},
	552: {MailboxFull, ScopeRecipient, "rfc5321-552"},
	553: {Syntax, ScopeRecipient, "rfc5321-553"},
	554: {Other, ScopeUnknown, "rfc5321-554"},
	555: {Syntax, ScopeSession, "rfc5321-555"},
	556: {UnknownDomain, ScopeRecipient, "rfc7504-556"},
}

func basicDefault(code, class int) fallback {
	if f, ok := basicCodes[code]; ok {
		return f
	}
	if class == 4 {
		return fallback{Other, ScopeUnknown, "rfc5321-4xx"}
	}
	return fallback{Other, ScopeUnknown, "rfc5321-5xx"}
}
