package events

// Headers that every broker adapter sets on a parked message, so an operator
// reading a dead-letter stream sees why and from where a message came,
// whichever broker carried it.
const (
	// HeaderDeadLetterReason is the error that made the consumer give up.
	HeaderDeadLetterReason = "Mercato-Dead-Letter-Reason"
	// HeaderOriginalTopic is the topic the message was consumed from.
	HeaderOriginalTopic = "Mercato-Original-Topic"
	// HeaderDeadLetterConsumer is the consumer that parked the message.
	HeaderDeadLetterConsumer = "Mercato-Dead-Letter-Consumer"
)
