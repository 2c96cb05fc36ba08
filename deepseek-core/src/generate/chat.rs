//! [`ChatSession`]: a multi-turn conversation that keeps its KV cache. Each turn re-renders the
//! whole conversation, keeps the cached tokens it shares as a prefix with the new prompt and
//! evaluates only the rest.

use super::{
    prompt_opens_reasoning, Event, GenerateParams, GenerationResult, Generator, Stream, Target,
};
use crate::error::{Error, Result};
use crate::session::Session;
use crate::template::Message;

/// The part of a chat session a [`Stream`] updates.
pub(crate) struct ChatState {
    pub(crate) session: Session,
    /// Exactly the tokens held by `session`'s cache.
    pub(crate) cached: Vec<u32>,
    pub(crate) messages: Vec<Message>,
}

/// A conversation with its own session. Replies are appended to [`messages`](Self::messages)
/// with the answer as `content` and the reasoning as `reasoning_content` (R1's template drops
/// earlier turns' reasoning, so the cache is reused up to that turn's `<｜Assistant｜>`).
pub struct ChatSession {
    generator: Generator,
    pub(super) state: ChatState,
}

impl std::fmt::Debug for ChatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("messages", &self.state.messages.len())
            .field("cached_tokens", &self.state.cached.len())
            .finish()
    }
}

impl ChatSession {
    /// An empty conversation on a fresh session of `generator`.
    pub fn new(generator: &Generator) -> Result<Self> {
        Ok(ChatSession {
            generator: generator.clone(),
            state: ChatState {
                session: generator.new_session()?,
                cached: Vec::new(),
                messages: Vec::new(),
            },
        })
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[Message] {
        &self.state.messages
    }

    /// Appends a message (e.g. a system prompt) without generating.
    pub fn push(&mut self, message: Message) {
        self.state.messages.push(message);
    }

    /// The tokens held in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.state.cached
    }

    /// The underlying session.
    pub fn session(&self) -> &Session {
        &self.state.session
    }

    /// Forgets the conversation and the cache.
    pub fn reset(&mut self) {
        self.state.messages.clear();
        self.state.cached.clear();
        self.state.session.reset();
    }

    /// Sends a user message and returns the reply.
    pub fn send(&mut self, user: &str, params: &GenerateParams) -> Result<GenerationResult> {
        self.send_stream(user, params)?.into_result()
    }

    /// Sends a user message, calling `on_event` with each delta until it returns `false`.
    pub fn send_with(
        &mut self,
        user: &str,
        params: &GenerateParams,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<GenerationResult> {
        self.send_stream(user, params)?.run(on_event)
    }

    /// Sends a user message and streams the reply. The reply joins the conversation when the
    /// stream ends (or is dropped: a cancelled reply keeps what was generated). A request
    /// refused before generating (bad params, too long for the context, a template error)
    /// leaves the conversation and the cache as they were.
    pub fn send_stream(&mut self, user: &str, params: &GenerateParams) -> Result<Stream<'_>> {
        self.state.messages.push(Message::user(user));
        let generator = &self.generator;
        let state = &mut self.state;
        // Everything that can fail, before the stream takes the conversation.
        let ready = (|| {
            let (text, prompt) = generator.chat_tokens_for(&state.messages, params)?;
            let sampler = generator.sampler(&prompt, params)?;
            let keep = generator.reuse_cache(&mut Target::Chat(state), &prompt, params)?;
            Ok((prompt_opens_reasoning(&text), prompt, keep, sampler))
        })();
        match ready {
            Ok((in_reasoning, prompt, keep, sampler)) => Ok(generator.launch(
                Target::Chat(state),
                sampler,
                prompt,
                keep,
                in_reasoning,
                params,
            )),
            Err(e) => {
                state.messages.pop();
                Err(e)
            }
        }
    }

    /// [`send_stream`](Self::send_stream) for callers that cannot hold a borrow across calls
    /// (language bindings): the stream owns the conversation, and
    /// [`Stream::into_chat_session`] gives it back with the reply. On error the conversation
    /// comes back unchanged, with the error.
    #[allow(clippy::result_large_err)]
    pub fn into_stream(
        mut self: Box<Self>,
        user: &str,
        params: &GenerateParams,
    ) -> std::result::Result<Stream<'static>, (Box<Self>, Error)> {
        self.state.messages.push(Message::user(user));
        let generator = self.generator.clone();
        // Everything that can fail, on a borrow; only then does the conversation move.
        let ready = (|| {
            let (text, prompt) = generator.chat_tokens_for(&self.state.messages, params)?;
            let sampler = generator.sampler(&prompt, params)?;
            let keep =
                generator.reuse_cache(&mut Target::Chat(&mut self.state), &prompt, params)?;
            Ok((prompt_opens_reasoning(&text), prompt, keep, sampler))
        })();
        match ready {
            Ok((in_reasoning, prompt, keep, sampler)) => {
                let target = Target::OwnedChat(self);
                Ok(generator.launch(target, sampler, prompt, keep, in_reasoning, params))
            }
            Err(e) => {
                self.state.messages.pop();
                Err((self, e))
            }
        }
    }

    /// Streams a reply to the conversation as it stands (e.g. to retry after an error, or after
    /// [`push`](Self::push)ing a user or tool message).
    pub fn respond(&mut self, params: &GenerateParams) -> Result<Stream<'_>> {
        let (text, prompt) = self
            .generator
            .chat_tokens_for(&self.state.messages, params)?;
        let in_reasoning = super::prompt_opens_reasoning(&text);
        self.generator
            .start_reusing(Target::Chat(&mut self.state), prompt, in_reasoning, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::tests::{generator, greedy};
    use crate::session::SessionOptions;

    #[test]
    fn advance_generates_one_token_at_a_time() {
        let gen = generator();
        let msgs = [Message::user("What is 1+1?")];
        let want = gen.chat(&msgs, &greedy(8)).unwrap();
        let mut s = gen.chat_stream(&msgs, &greedy(8)).unwrap();
        let (mut steps, mut text) = (0, String::new());
        loop {
            let going = s.advance().unwrap();
            steps += 1;
            assert!(s.tokens().len() <= steps, "one token per advance");
            while let Some(e) = s.pop_event() {
                text.push_str(&e.text);
            }
            if !going {
                break;
            }
        }
        // 8 tokens, then the step that finds max_tokens reached.
        assert_eq!(steps, 9);
        assert!(!s.advance().unwrap(), "an ended stream stays ended");
        let r = s.result().unwrap();
        assert_eq!(r.tokens, want.tokens);
        assert_eq!(text, want.reasoning_content.unwrap());
        let unstarted = gen.chat_stream(&msgs, &greedy(8)).unwrap();
        assert!(unstarted.result().is_err());
        assert!(unstarted.into_chat_session().is_none());
    }

    #[test]
    fn owned_chat_streams_give_the_conversation_back() {
        let gen = generator();
        let mut borrowed = gen.chat_session().unwrap();
        let mut owned = Box::new(gen.chat_session().unwrap());
        for chat in [&mut borrowed, &mut *owned] {
            chat.push(Message::system("Be brief."));
        }
        // A reply dropped after its first delta keeps what was generated, in both forms.
        {
            let mut s = borrowed.send_stream("What is 1+1?", &greedy(6)).unwrap();
            s.next();
        }
        let mut s = owned.into_stream("What is 1+1?", &greedy(6)).unwrap();
        s.next();
        let owned = s.into_chat_session().unwrap();
        assert_eq!(owned.messages(), borrowed.messages());
        assert_eq!(owned.messages().len(), 3);
        assert_eq!(owned.cached_tokens(), borrowed.cached_tokens());
        assert_eq!(owned.cached_tokens().len(), owned.session().len());

        // The next turn reuses the cache exactly as the borrowed form does.
        let want = borrowed.send("And 2+2?", &greedy(6)).unwrap();
        let mut s = owned.into_stream("And 2+2?", &greedy(6)).unwrap();
        for e in s.by_ref() {
            e.unwrap();
        }
        let got = s.result().unwrap();
        let owned = s.into_chat_session().unwrap();
        assert!(got.usage.cached_tokens > 0);
        assert_eq!(
            (got.tokens, got.usage.cached_tokens),
            (want.tokens, want.usage.cached_tokens)
        );
        assert_eq!(owned.messages(), borrowed.messages());

        // A rejected request hands the conversation back untouched.
        let before = (owned.messages().to_vec(), owned.cached_tokens().to_vec());
        let Err((owned, e)) = owned.into_stream("x", &greedy(0)) else {
            panic!("max_tokens 0 accepted")
        };
        assert!(matches!(e, Error::InvalidParameter { .. }), "{e:?}");
        let small = gen.clone().with_session_options(SessionOptions {
            context_length: Some(40),
            ..Default::default()
        });
        assert_eq!(
            (owned.messages().to_vec(), owned.cached_tokens().to_vec()),
            before
        );
        let mut tiny = Box::new(small.chat_session().unwrap());
        tiny.push(Message::system("Be brief."));
        let Err((tiny, e)) = tiny.into_stream(&"word ".repeat(50), &greedy(2)) else {
            panic!("context overflow accepted")
        };
        assert!(matches!(e, Error::ContextOverflow { .. }), "{e:?}");
        assert_eq!((tiny.messages().len(), tiny.session().len()), (1, 0));
    }
}
