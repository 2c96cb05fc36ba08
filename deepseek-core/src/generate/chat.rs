//! [`ChatSession`]: a multi-turn conversation that keeps its KV cache. Each turn re-renders the
//! whole conversation, keeps the cached tokens it shares as a prefix with the new prompt and
//! evaluates only the rest.

use super::{Event, GenerateParams, GenerationResult, Generator, Stream, Target};
use crate::error::Result;
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
    state: ChatState,
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
    /// stream ends (or is dropped: a cancelled reply keeps what was generated).
    pub fn send_stream(&mut self, user: &str, params: &GenerateParams) -> Result<Stream<'_>> {
        self.state.messages.push(Message::user(user));
        if let Err(e) = self.check(params) {
            self.state.messages.pop();
            return Err(e);
        }
        self.respond(params)
    }

    fn check(&self, params: &GenerateParams) -> Result<()> {
        params.validate()?;
        self.generator.chat_tokens(&self.state.messages).map(|_| ())
    }

    /// Streams a reply to the conversation as it stands (e.g. to retry after an error, or after
    /// [`push`](Self::push)ing a user or tool message).
    pub fn respond(&mut self, params: &GenerateParams) -> Result<Stream<'_>> {
        let (text, prompt) = self.generator.chat_tokens(&self.state.messages)?;
        let state = &mut self.state;
        let mut keep = state
            .cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is evaluated again for its logits if everything is cached.
        keep = keep.min(prompt.len().saturating_sub(1));
        state.session.truncate(keep)?;
        state.cached.truncate(keep);
        let in_reasoning = super::prompt_opens_reasoning(&text);
        self.generator
            .start(Target::Chat(state), prompt, keep, in_reasoning, params)
    }
}
