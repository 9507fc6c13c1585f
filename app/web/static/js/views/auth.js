// Log in (OAuth2 password form, the same tokens as any API client) or register a new account.

import { login, register } from '../api.js';
import { field, h, notice, replace } from '../dom.js';

export function renderAuth(root, { onSignedIn }) {
  document.title = 'Log in · ESSX';
  const mode = new URLSearchParams(location.hash.split('?')[1] || '').get('register') ? 'register' : 'login';
  replace(root, mode === 'register' ? registerForm(root, onSignedIn) : loginForm(root, onSignedIn));
}

function loginForm(root, onSignedIn) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h(
    'form',
    { class: 'form', 'aria-labelledby': 'login-title' },
    field('Email', email),
    field('Password', password),
    message,
    h('div', { class: 'row' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      await login(email.value.trim(), password.value);
      onSignedIn();
    } catch (err) {
      replace(message, notice('error', err.status === 401 ? 'Wrong email or password.' : err.message));
      submit.disabled = false;
      password.focus();
    }
  });
  queueMicrotask(() => email.focus());
  return h(
    'section',
    { class: 'card auth stack' },
    h('h1', { id: 'login-title' }, 'Log in to ESSX'),
    h('p', { class: 'muted' }, 'Trade solar energy with your neighbours for energy coin.'),
    form,
    h(
      'p',
      {},
      'New here? ',
      h('a', { href: '#/?register=1', onclick: (e) => switchTo(e, root, onSignedIn, 'register') }, 'Create an account'),
    ),
  );
}

function registerForm(root, onSignedIn) {
  const name = h('input', { name: 'display_name', autocomplete: 'name', required: true, maxlength: 100 });
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const password = h('input', {
    type: 'password',
    name: 'password',
    autocomplete: 'new-password',
    required: true,
    minlength: 8,
    maxlength: 128,
  });
  const roles = h(
    'fieldset',
    {},
    h('legend', {}, 'I am a'),
    h('label', {}, h('input', { type: 'radio', name: 'role', value: 'prosumer', checked: true }), 'prosumer (I have solar or a battery)'),
    h('label', {}, h('input', { type: 'radio', name: 'role', value: 'consumer' }), 'consumer (I only buy)'),
  );
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Create account');
  const form = h(
    'form',
    { class: 'form', 'aria-labelledby': 'register-title' },
    field('Name', name),
    field('Email', email),
    field('Password', password, 'At least 8 characters.'),
    roles,
    message,
    h('div', { class: 'row' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      const role = form.querySelector('input[name="role"]:checked').value;
      // The answer is the same whether or not the email already had an account (no one can probe emails).
      await register({ email: email.value.trim(), password: password.value, display_name: name.value.trim(), role });
      try {
        await login(email.value.trim(), password.value);
      } catch (err) {
        if (err.status !== 401) throw err;
        throw new Error('Could not log in with this email and password. If the email already had an account, log in with its own password.');
      }
      history.replaceState(null, '', '#/');
      onSignedIn();
    } catch (err) {
      replace(message, notice('error', err.message));
      submit.disabled = false;
    }
  });
  queueMicrotask(() => name.focus());
  return h(
    'section',
    { class: 'card auth stack' },
    h('h1', { id: 'register-title' }, 'Create an account'),
    h('p', { class: 'muted' }, 'Prosumers can sell once an operator has approved them; consumers can buy at once.'),
    form,
    h('p', {}, 'Have an account? ', h('a', { href: '#/', onclick: (e) => switchTo(e, root, onSignedIn, 'login') }, 'Log in')),
  );
}

function switchTo(event, root, onSignedIn, mode) {
  event.preventDefault();
  history.replaceState(null, '', mode === 'register' ? '#/?register=1' : '#/');
  replace(root, mode === 'register' ? registerForm(root, onSignedIn) : loginForm(root, onSignedIn));
}
